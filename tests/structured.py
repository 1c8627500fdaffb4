"""Structured test inputs: the matrices and conv kernels users actually meet
(rank-deficient, duplicated, scaled, clustered, with structured complex
phases), not only Gaussians. Each generator is deterministic given a torch
Generator, so the deterministic sweeps and the hypothesis strategies share them.
"""

from __future__ import annotations

import math

import torch

MATRIX_KINDS = (
    "gaussian",
    "identical_rows",
    "identical_cols",
    "duplicated_rows",
    "zero_cols",
    "zero_rows",
    "rank_one",
    "low_rank",
    "constant",
    "identity",
    "clustered",
    "repeated_values",
    "graded_rows",
    "graded_cols",
    "phase_structured",
)


def _randn(shape, dtype, gen):
    if dtype.is_complex:
        real = torch.randn(shape, dtype=torch.float64, generator=gen)
        imag = torch.randn(shape, dtype=torch.float64, generator=gen)
        return torch.complex(real, imag) / math.sqrt(2)
    return torch.randn(shape, dtype=torch.float64, generator=gen)


def _wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


def _orthonormal(rows, cols, dtype, gen):
    q, _ = torch.linalg.qr(_randn((rows, cols), _wide(dtype), gen))
    return q


def structured_matrix(kind: str, m: int, n: int, dtype: torch.dtype, gen: torch.Generator,
                      scale: float = 1.0) -> torch.Tensor:
    """One m x n matrix of the given kind, built in double precision and
    rounded to dtype once (so the double copy of the result is exactly the
    input the kernel sees), times ``scale``."""
    k = min(m, n)
    wide = _wide(dtype)
    if kind == "gaussian":
        A = _randn((m, n), wide, gen)
    elif kind == "identical_rows":
        A = _randn((1, n), wide, gen).expand(m, n)
    elif kind == "identical_cols":
        A = _randn((m, 1), wide, gen).expand(m, n)
    elif kind == "duplicated_rows":
        base = _randn((max(1, m // 2), n), wide, gen)
        A = base[torch.randint(0, base.shape[0], (m,), generator=gen)]
    elif kind == "zero_cols":
        A = _randn((m, n), wide, gen)
        A[:, torch.randperm(n, generator=gen)[: max(1, n // 2)]] = 0
    elif kind == "zero_rows":
        A = _randn((m, n), wide, gen)
        A[torch.randperm(m, generator=gen)[: max(1, m // 2)]] = 0
    elif kind == "rank_one":
        A = _randn((m, 1), wide, gen) @ _randn((1, n), wide, gen)
    elif kind == "low_rank":
        r = max(1, k // 2)
        A = _randn((m, r), wide, gen) @ _randn((r, n), wide, gen)
    elif kind == "constant":
        c = _randn((1, 1), wide, gen)
        A = c.expand(m, n)
    elif kind == "identity":
        A = torch.eye(m, n, dtype=wide)
    elif kind in ("clustered", "repeated_values"):
        # U diag(s) V^H with s = 1, 1, ... (repeated) or 1 + 1e-7 j (a tight cluster)
        s = torch.ones(k, dtype=torch.float64)
        if kind == "clustered":
            s = s + 1e-7 * torch.arange(k, dtype=torch.float64)
        s[k // 2 :] *= 0.25
        A = (_orthonormal(m, k, dtype, gen) * s.to(wide)) @ _orthonormal(n, k, dtype, gen).mH
    elif kind == "graded_rows":
        A = torch.logspace(-6, 6, m, dtype=torch.float64).to(wide)[:, None] * _randn((m, n), wide, gen)
    elif kind == "graded_cols":
        A = _randn((m, n), wide, gen) * torch.logspace(6, -6, n, dtype=torch.float64).to(wide)[None, :]
    elif kind == "phase_structured":
        # rank one with unit-modulus phases e^{i (a_j + b_l)}: every entry of equal modulus
        if dtype.is_complex:
            a = torch.rand(m, 1, dtype=torch.float64, generator=gen) * 2 * math.pi
            b = torch.rand(1, n, dtype=torch.float64, generator=gen) * 2 * math.pi
            A = torch.polar(torch.ones(m, n, dtype=torch.float64), a + b)
        else:
            A = torch.ones(m, 1, dtype=torch.float64) @ torch.where(torch.rand(1, n, generator=gen) < 0.5, -1.0, 1.0
                                                                     ).double()
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return (A.contiguous() * scale).to(dtype)


def structured_batch(kind: str, batch: int, m: int, n: int, dtype: torch.dtype, seed: int,
                     scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([structured_matrix(kind, m, n, dtype, gen, scale) for _ in range(batch)])


KERNEL_KINDS = (
    "box",
    "constant_scaled",
    "duplicated_filters",
    "expanded",
    "rank_one",
    "zero",
    "identity",
    "centre_only",
    "gaussian",
)


def structured_kernel(kind: str, c_out: int, c_in: int, k: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """A conv kernel (c_out, c_in, k, k) of the given kind."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "box":
        w = torch.full((c_out, c_in, k, k), 1.0 / (k * k), dtype=torch.float64)
    elif kind == "constant_scaled":
        w = torch.full((c_out, c_in, k, k), 1e3, dtype=torch.float64)
    elif kind == "duplicated_filters":
        w = torch.randn(1, c_in, k, k, dtype=torch.float64, generator=gen).repeat(c_out, 1, 1, 1)
    elif kind == "expanded":  # one filter, repeated over the input channels too (an expand view)
        w = torch.randn(c_out, 1, k, k, dtype=torch.float64, generator=gen).expand(c_out, c_in, k, k)
    elif kind == "rank_one":  # outer product of a channel pair and a spatial tap pattern
        a = torch.randn(c_out, dtype=torch.float64, generator=gen)
        b = torch.randn(c_in, dtype=torch.float64, generator=gen)
        t = torch.randn(k, k, dtype=torch.float64, generator=gen)
        w = a[:, None, None, None] * b[None, :, None, None] * t
    elif kind == "zero":
        w = torch.zeros(c_out, c_in, k, k, dtype=torch.float64)
    elif kind == "identity":
        w = torch.zeros(c_out, c_in, k, k, dtype=torch.float64)
        for i in range(min(c_out, c_in)):
            w[i, i, k // 2, k // 2] = 1.0
    elif kind == "centre_only":
        w = torch.zeros(c_out, c_in, k, k, dtype=torch.float64)
        w[:, :, k // 2, k // 2] = torch.randn(c_out, c_in, dtype=torch.float64, generator=gen)
    elif kind == "gaussian":
        w = torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=gen)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return w.to(dtype)
