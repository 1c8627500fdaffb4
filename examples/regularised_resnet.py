"""Does a spectral-norm penalty improve a ResNet's generalisation? (Yi 2020)

    python examples/regularised_resnet.py [--seeds 5] [--weights 0 0.001 0.01 0.1 1] [--norm both] [--markdown FILE]

A small ResNet (``cs.nn.Residual`` blocks, with BatchNorm after every conv
and without) on scikit-learn's 8x8 digits in a low-data regime: a few hundred
training images, a fixed test split of 449 held out. Each configuration trains
with the loss ``cross_entropy + weight * cs.nn.spectral_penalty(model, 8)``
(the sum over the conv layers of a certified bound of each one's norm at the
input size it sees) and reports, over the seeds, the mean and spread of the
test accuracy, the generalisation gap (train minus test accuracy), and the
network's certified Lipschitz bound after training (``cs.lipschitz_bound``,
batch norm included). The table in docs/regularisation.md is this script's
output, whatever it shows.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import convspectra as cs


def conv_norm(c_in: int, c_out: int, batchnorm: bool, stride: int = 1) -> list[nn.Module]:
    """A 3x3 conv, then batch norm (or, without it, the conv's own bias)."""
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm)
    return [conv, nn.BatchNorm2d(c_out)] if batchnorm else [conv]


def block(c: int, batchnorm: bool) -> nn.Module:
    branch = [*conv_norm(c, c, batchnorm), nn.ReLU(), *conv_norm(c, c, batchnorm)]
    return nn.Sequential(cs.nn.Residual(nn.Sequential(*branch)), nn.ReLU())


def make_model(batchnorm: bool = True) -> nn.Sequential:
    return nn.Sequential(
        *conv_norm(1, 16, batchnorm), nn.ReLU(),                 # 16 x 8 x 8
        block(16, batchnorm), block(16, batchnorm),
        *conv_norm(16, 32, batchnorm, stride=2), nn.ReLU(),     # 32 x 4 x 4
        block(32, batchnorm),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def load_digits(n_train: int, seed: int):
    """n_train training images drawn per seed from a fixed 1348-image pool; the fixed 449-image test split."""
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = len(y) // 4
    test, pool = perm[:n_test], perm[n_test:]
    train = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1000 + seed))[:n_train]]
    return (x[train], y[train]), (x[test], y[test])


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def run(weight: float, seed: int, n_train: int, epochs: int, batchnorm: bool = True, batch_size: int = 32,
        lr: float = 3e-3) -> dict:
    torch.manual_seed(seed)
    (xtr, ytr), (xte, yte) = load_digits(n_train, seed)
    model = make_model(batchnorm)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(n_train / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n_train).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            if weight:
                loss = loss + weight * cs.nn.spectral_penalty(model, 8)
            loss.backward()
            opt.step()
            sched.step()
    train_acc, test_acc = accuracy(model, xtr, ytr), accuracy(model, xte, yte)
    return {"train": train_acc, "test": test_acc, "gap": train_acc - test_acc,
            "lipschitz": float(cs.lipschitz_bound(model, 8).detach()), "seconds": time.perf_counter() - start}


def spread(values) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--norm", choices=["batch", "none", "both"], default="both",
                   help="with batch norm after every conv, without, or both")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 1e-3, 1e-2, 1e-1, 1.0])
    p.add_argument("--train-size", type=int, default=300)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    args = p.parse_args(argv)
    head = ["normalisation", "penalty weight", "test accuracy", "generalisation gap", "train accuracy", "Lipschitz bound",
            "s / run"]
    rows = []
    print(f"digits, small ResNet, {args.train_size} training images, {args.epochs} epochs, "
          f"{args.seeds} seeds (mean ± standard deviation)")
    variants = {"batch": [True], "none": [False], "both": [True, False]}[args.norm]
    for batchnorm, weight in ((b, w) for b in variants for w in args.weights):
        results = [run(weight, seed, args.train_size, args.epochs, batchnorm) for seed in range(args.seeds)]
        row = ["batch norm" if batchnorm else "none", f"{weight:g}", spread([r["test"] for r in results]),
               spread([r["gap"] for r in results]), spread([r["train"] for r in results]),
               spread([r["lipschitz"] for r in results]), f"{statistics.mean(r['seconds'] for r in results):.1f}"]
        rows.append(row)
        print(" | ".join(row), flush=True)
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
