"""Case families of the spectra: conv singular values (grid, ResNet-18, small
matrices), the per-frequency SVD, the spectral norms, batched svdvals."""

from __future__ import annotations

import torch

import convspectra as cs

from .case import N_INPUT_SETS, Case, random_weights, spectrum_bytes

GRID = [(16, 32), (64, 32), (128, 16), (256, 8), (512, 4)]  # (c, n): c x c x 3 x 3 at n x n
# ResNet-18's convs at the sizes they see for a 224 x 224 image (conv1 is the
# stride-2 stem), plus the first stage's shape at 112 and 224 for scale.
RESNET18 = [
    ("resnet18.conv1", 64, 3, 7, 224, 2),
    ("resnet18.layer1", 64, 64, 3, 56, 1),
    ("resnet18.layer2", 128, 128, 3, 28, 1),
    ("resnet18.layer3", 256, 256, 3, 14, 1),
    ("resnet18.layer4", 512, 512, 3, 7, 1),
    ("64x64x3x3@112", 64, 64, 3, 112, 1),
    ("64x64x3x3@224", 64, 64, 3, 224, 1),
]
RESNET18_QUICK = {"resnet18.layer1"}
# Small per-frequency matrices, where the fused Jacobi kernel runs (min(m, n) <= 8
# on the CPU): the symbol of a c x c layer on an n x n grid, half grid.
SMALL_SVD_GRID = [(3, 64), (4, 64), (8, 64), (8, 128)]


def resnet18_cases() -> list[Case]:
    """The exact circular spectrum of ResNet-18's convs, forward."""
    return [
        Case(
            family="conv singular values, circular",
            name=name,
            shape=f"{c_out}x{c_in}x{k}x{k} @{n}x{n}" + (f" s{s}" if s > 1 else ""),
            make_inputs=random_weights(c_out, c_in, k),
            ours=lambda w, n=n, s=s: cs.singular_values(w, n, stride=s),
            reference=lambda w, n=n, s=s: cs.reference.singular_values(w, n, stride=s),
            bytes_moved=spectrum_bytes(c_out, c_in, n, s),
            quick=name in RESNET18_QUICK,
        )
        for name, c_out, c_in, k, n, s in RESNET18
    ]


def _svd_outputs(factors):
    # S and U Vh: invariant to the phase of each singular vector pair, so the
    # two implementations can be compared, and a backward reaches U, S and Vh
    U, S, Vh = factors
    return torch.cat([S.flatten(), torch.view_as_real(U @ Vh).flatten()])


def _reference_gram(w, n):
    # Delattre et al.'s iteration on the full symbol, in plain torch
    return cs.reference.gram_bound(cs.reference.symbol(w, n)).max()


def grid_cases() -> list[Case]:
    """Every family on the c x c x 3 x 3 grid, forward and backward."""
    families = [  # (family, ours, reference, passes over the symbol, quick rows)
        ("conv singular values, circular", lambda w, n: cs.singular_values(w, n),
         lambda w, n: cs.reference.singular_values(w, n), 1, lambda c, d: c <= 256 and d == "forward"),
        ("per-frequency svd + vectors", lambda w, n: _svd_outputs(cs.conv_svd(w, n)),
         lambda w, n: _svd_outputs(cs.reference.conv_svd(w, n)), 4, lambda c, d: c == 64 and d == "forward"),
        ("spectral norm, exact circular", lambda w, n: cs.spectral_norm(w, n),
         lambda w, n: cs.reference.spectral_norm(w, n), 1, lambda c, d: c == 64 and d == "forward"),
        ("spectral norm, gram", lambda w, n: cs.spectral_norm(w, n, method="gram"), _reference_gram, 1,
         lambda c, d: c == 16 and d == "forward"),
        ("spectral norm, certified zeros", lambda w, n: cs.spectral_norm(w, n, "zeros", "certified"),
         lambda w, n: cs.reference.spectral_norm(w, n + 2), 1, lambda c, d: c == 64 and d == "forward"),
    ]
    cases = []
    for family, ours, ref, passes, quick in families:
        for c, n in GRID:
            for direction in ("forward", "backward"):

                def make(device, c=c, grad=direction == "backward"):
                    return tuple(w.requires_grad_(grad) for w in random_weights(c, c, 3)(device))

                cases.append(Case(
                    family=family, name=f"c{c}@{n}", shape=f"{c}x{c}x3x3 @{n}x{n}", make_inputs=make,
                    ours=lambda w, n=n, f=ours: f(w, n), reference=lambda w, n=n, f=ref: f(w, n),
                    bytes_moved=passes * spectrum_bytes(c, c, n, 1) * (2 if direction == "backward" else 1),
                    direction=direction, quick=quick(c, direction),
                    tol=1e-4 if direction == "forward" else 1e-3,
                ))
    return cases


def small_svd_cases() -> list[Case]:
    """Batched singular values of F = n (n/2 + 1) complex c x c matrices
    against torch.linalg.svdvals, and the spectrum of a c x c x 3 x 3 layer."""
    cases = []
    for c, n in SMALL_SVD_GRID:
        F = n * (n // 2 + 1)

        def make(device, c=c, F=F):
            return tuple(torch.randn(F, c, c, dtype=torch.complex64, device=device) for _ in range(N_INPUT_SETS))

        cases.append(Case(
            family="batched svdvals, small", name=f"c{c}@{n}", shape=f"{F}x{c}x{c} complex", make_inputs=make,
            ours=cs.linalg.svdvals, reference=torch.linalg.svdvals, bytes_moved=F * c * c * 8 + F * c * 4,
            # LAPACK's count for singular values alone (bidiagonalisation), times 4 for complex
            flops=F * 4 * (4 * c**3 - 4 * c**3 // 3),
            quick=c == 8 and n == 64,
        ))
        cases.append(Case(
            family="conv singular values, circular", name=f"c{c}@{n}", shape=f"{c}x{c}x3x3 @{n}x{n}",
            make_inputs=random_weights(c, c, 3), ours=lambda w, n=n: cs.singular_values(w, n),
            reference=lambda w, n=n: cs.reference.singular_values(w, n),
            bytes_moved=spectrum_bytes(c, c, n, 1),
        ))
    return cases
