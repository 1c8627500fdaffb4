"""A 1-Lipschitz CNN on scikit-learn's digits, with each 1-Lipschitz layer kind.

    python examples/digits_lipschitz.py [--layer cayley|bcop|lot|soc|aol|cpl|sll|both|all] [--epochs N]

Built from convspectra's pieces only: 1-Lipschitz convolutions, ``cs.nn.MaxMin``
activations and a ``cs.nn.OrthogonalLinear`` head, trained with
``cs.nn.OffsetCrossEntropy``. ``cs.lipschitz_bound`` certifies the network's
Lipschitz constant (about 1, measured layer by layer at the true input sizes),
``cs.certified_accuracy`` counts the test images whose logit margin exceeds
``sqrt(2) * eps * L`` (no perturbation of L2 norm eps can change their
prediction), and ``cs.pgd_l2`` attacks every test image at radius eps to check
that none of the certified ones flips.

The 8x8 digits (1797 images, bundled with scikit-learn, no download) are
scaled to [0, 1]; the radius is eps = 0.1 in L2 norm.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import convspectra as cs

EPS = 0.1


STRIDED = {"cayley": cs.nn.CayleyConv2d, "bcop": cs.nn.BCOPConv2d, "lot": cs.nn.LOTConv2d, "soc": cs.nn.SOCConv2d}
SAME_SIZE = {"aol": lambda c: cs.nn.AOLConv2d(c, c, 3), "cpl": lambda c: cs.nn.CPLConv2d(c, c, 3),
             "sll": lambda c: cs.nn.SLLConv2d(c, c, 3)}
LAYERS = (*STRIDED, *SAME_SIZE)


def make_model(layer: str) -> nn.Sequential:
    head = "bjorck" if layer == "bcop" else "cayley"
    if layer in STRIDED:  # the orthogonal layers downsample themselves (pixel unshuffle inside)
        conv = STRIDED[layer]
        return nn.Sequential(
            conv(1, 16, 3), cs.nn.MaxMin(),              # 16 x 8 x 8
            conv(16, 64, 3, stride=2), cs.nn.MaxMin(),   # 64 x 4 x 4
            conv(64, 128, 3, stride=2), cs.nn.MaxMin(),  # 128 x 2 x 2
            nn.Flatten(), cs.nn.OrthogonalLinear(512, 10, method=head),
        )
    block = SAME_SIZE[layer]  # c -> c layers: an AOL stem for the channels, pixel unshuffle to downsample
    return nn.Sequential(
        cs.nn.AOLConv2d(1, 16, 3), cs.nn.MaxMin(),             # 16 x 8 x 8
        block(16), cs.nn.MaxMin(), nn.PixelUnshuffle(2),       # 64 x 4 x 4
        block(64), cs.nn.MaxMin(), nn.PixelUnshuffle(2),       # 256 x 2 x 2
        block(256), cs.nn.MaxMin(),
        nn.Flatten(), cs.nn.OrthogonalLinear(1024, 10, method=head),
    )


def load_digits(seed: int = 0):
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = len(y) // 4
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def evaluate(model, x, y, eps: float = EPS, attack_steps: int = 0):
    """Clean accuracy, certified accuracy at L2 radius eps (by the model's
    certified Lipschitz bound), the bound itself, and with ``attack_steps``
    the accuracy under a PGD attack of radius eps and how many certified
    samples it flipped (0, or the certificate is wrong)."""
    model.eval()
    L = cs.lipschitz_bound(model, 8).detach()
    with torch.no_grad():
        logits = model(x)
    clean = (logits.argmax(1) == y).float().mean().item()
    certified = cs.certified_radius(logits, L, y) > eps
    out = {"clean": clean, "certified": cs.certified_accuracy(model, x, y, eps, lipschitz=L), "lipschitz": float(L)}
    if attack_steps:
        x_adv = cs.pgd_l2(model, x, y, eps, steps=attack_steps, restarts=2)
        with torch.no_grad():
            robust = model(x_adv).argmax(1) == y
        out["attacked"] = robust.float().mean().item()
        out["certified_flipped"] = int((certified & ~robust).sum())
    return out


def train(layer: str, epochs: int, seed: int = 0, batch_size: int = 64, lr: float = 0.01, limit: int | None = None,
          attack_steps: int = 0):
    torch.manual_seed(seed)
    (xtr, ytr), (xte, yte) = load_digits(seed)
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    model = make_model(layer)
    # the offset certifies eps with a factor 2 to spare (L is about 1 for these layers)
    loss_fn = cs.nn.OffsetCrossEntropy(offset=2 * math.sqrt(2) * EPS, temperature=1 / 8)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(len(ytr) / batch_size))
    epoch_times = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for idx in torch.randperm(len(ytr)).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            sched.step()
        epoch_times.append(time.perf_counter() - start)
    result = evaluate(model, xte, yte, attack_steps=attack_steps)
    return {"layer": layer, **result, "epoch_s": sum(epoch_times) / len(epoch_times), "model": model}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", choices=[*LAYERS, "both", "all"], default="both",
                   help="one layer kind, both (cayley and bcop) or all")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attack-steps", type=int, default=100, help="PGD steps of the cross-check (0: no attack)")
    args = p.parse_args(argv)
    layers = {"both": ["cayley", "bcop"], "all": list(LAYERS)}.get(args.layer, [args.layer])
    print(f"digits, 1-Lipschitz CNN, {args.epochs} epochs, certified radius eps = {EPS} (L2)")
    print(f"{'layer':<8} {'L bound':>9} {'clean acc':>9} {'certified acc':>13} {'PGD acc':>8} {'flipped':>7} "
          f"{'s / epoch':>9}")
    for layer in layers:
        r = train(layer, args.epochs, args.seed, attack_steps=args.attack_steps)
        attacked = f"{r['attacked']:>8.3f} {r['certified_flipped']:>7d}" if args.attack_steps else f"{'-':>8} {'-':>7}"
        print(f"{layer:<8} {r['lipschitz']:>9.6f} {r['clean']:>9.3f} {r['certified']:>13.3f} {attacked} "
              f"{r['epoch_s']:>9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
