"""Cost and tightness of the spectral-norm methods on ResNet-18-shaped layers
(docs/accuracy.md). Truth: the exact norm of the zero-padded ('same') layer,
by Lanczos to 1e-10, computed once. Each method's value (Lanczos at its
default tolerance 1e-6 included) is reported as a ratio to it (a bound is
>= 1) with its median time after a warm-up (forward only, the bench suite's
timer).
Usage: python bench/norm_accuracy.py [--markdown FILE] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys

import torch

import convspectra as cs
from convspectra.bench import time_ms

# ResNet-18's stride-1 3x3 convs at the sizes they see for a 224 x 224 image.
LAYERS = [("layer1", 64, 56), ("layer2", 128, 28), ("layer3", 256, 14), ("layer4", 512, 7)]
METHODS = [
    ("exact, circular", "circular", "exact"),
    ("exact, zeros (Lanczos)", "zeros", "exact"),
    ("certified, zeros", "zeros", "certified"),
    ("gram, circular", "circular", "gram"),
    ("gram, zeros", "zeros", "gram"),
    ("sum_taps", "zeros", "sum_taps"),
    ("reshape", "zeros", "reshape"),
    ("l1", "zeros", "l1"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(18)
    header = "| method | " + " | ".join(f"{name} {c}x{c}x3x3 @{n}: ratio, ms" for name, c, n in LAYERS) + " |"
    lines = [header, "| --- |" + " --- |" * len(LAYERS)]
    cells = {m[0]: [] for m in METHODS}
    for name, c, n in LAYERS:
        w = (torch.randn(c, c, 3, 3, generator=g) / (9 * c) ** 0.5).to(device)
        truth = cs.spectral_norm(w, (n, n), "zeros", "exact", tol=1e-10).item()
        for label, padding, method in METHODS:
            value = cs.spectral_norm(w, (n, n), padding, method).item()
            ms = time_ms(lambda: cs.spectral_norm(w, (n, n), padding, method), device, min_run_time=0)
            cells[label].append(f"{value / truth:.4f}, {ms:.0f}")
        print(f"{name}: truth {truth:.4f}", file=sys.stderr)
    for label, _, _ in METHODS:
        lines.append(f"| {label} | " + " | ".join(cells[label]) + " |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
