"""A 1-Lipschitz CNN on scikit-learn's digits, with CayleyConv2d or BCOPConv2d.

    python examples/digits_lipschitz.py [--layer cayley|bcop|both] [--epochs N]

Every layer is an L2 isometry or co-isometry (orthogonal convolutions, MaxMin
activations, an orthogonal linear head), so the whole network is 1-Lipschitz:
a change of norm eps in the input moves the logits by at most eps, and the
margin between the top two logits shrinks by at most sqrt(2) * eps. A test
image whose margin exceeds sqrt(2) * eps is therefore certified robust at
radius eps: no perturbation of that size can change its prediction.

The 8x8 digits (1797 images, bundled with scikit-learn, no download) are
scaled to [0, 1]; the radius is eps = 0.1 in L2 norm.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

import convspectra as cs

EPS = 0.1


class MaxMin(nn.Module):
    """Sorts each pair of channels (c, c + C/2): a 1-Lipschitz, gradient-norm
    preserving activation (GroupSort with groups of 2)."""

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class OrthogonalLinear(nn.Module):
    """y = Q x + b with Q (out x in) having orthonormal rows or columns: by the
    Cayley map (``cs.linalg.cayley``) or Bjorck (``cs.linalg.bjorck``)."""

    def __init__(self, in_features: int, out_features: int, method: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.orthogonal_(self.weight)
        if method == "cayley":
            self.weight.data *= 0.5  # Cayley of a small matrix: a matrix near the identity's corner
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.method = method

    def forward(self, x):
        Q = cs.linalg.cayley(self.weight) if self.method == "cayley" else cs.linalg.bjorck(self.weight)
        return F.linear(x, Q, self.bias)


def make_model(layer: str) -> nn.Sequential:
    conv = {"cayley": cs.nn.CayleyConv2d, "bcop": cs.nn.BCOPConv2d}[layer]
    return nn.Sequential(
        conv(1, 16, 3), MaxMin(),              # 16 x 8 x 8
        conv(16, 64, 3, stride=2), MaxMin(),   # 64 x 4 x 4
        conv(64, 128, 3, stride=2), MaxMin(),  # 128 x 2 x 2
        nn.Flatten(), OrthogonalLinear(512, 10, layer),
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


def margin_loss(logits, y, margin: float, temperature: float):
    """Cross-entropy with the true logit lowered by `margin`: it keeps pushing
    until the margin clears the certification threshold."""
    shifted = logits - margin * F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return F.cross_entropy(temperature * shifted, y)


@torch.no_grad()
def evaluate(model, x, y, eps: float = EPS):
    """Clean accuracy and certified robust accuracy at L2 radius eps."""
    model.eval()
    logits = model(x)
    top2 = logits.topk(2, dim=1)
    correct = top2.indices[:, 0] == y
    margin = top2.values[:, 0] - top2.values[:, 1]
    certified = correct & (margin > math.sqrt(2) * eps)
    return correct.float().mean().item(), certified.float().mean().item()


def train(layer: str, epochs: int, seed: int = 0, batch_size: int = 64, lr: float = 0.01, limit: int | None = None):
    torch.manual_seed(seed)
    (xtr, ytr), (xte, yte) = load_digits(seed)
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    model = make_model(layer)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(len(ytr) / batch_size))
    epoch_times = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for idx in torch.randperm(len(ytr)).split(batch_size):
            opt.zero_grad(set_to_none=True)
            margin_loss(model(xtr[idx]), ytr[idx], margin=2 * math.sqrt(2) * EPS, temperature=8.0).backward()
            opt.step()
            sched.step()
        epoch_times.append(time.perf_counter() - start)
    clean, certified = evaluate(model, xte, yte)
    return {"layer": layer, "clean": clean, "certified": certified, "epoch_s": sum(epoch_times) / len(epoch_times),
            "model": model}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", choices=["cayley", "bcop", "both"], default="both")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    layers = ["cayley", "bcop"] if args.layer == "both" else [args.layer]
    print(f"digits, 1-Lipschitz CNN, {args.epochs} epochs, certified radius eps = {EPS} (L2)")
    print(f"{'layer':<8} {'clean acc':>9} {'certified acc':>13} {'s / epoch':>9}")
    for layer in layers:
        r = train(layer, args.epochs, args.seed)
        print(f"{layer:<8} {r['clean']:>9.3f} {r['certified']:>13.3f} {r['epoch_s']:>9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
