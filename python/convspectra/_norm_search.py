"""The maximising frequency of a spectral norm without solving every frequency
(docs/math.md §11.4).

Exact norm: per block of the grid, the Gram matrices M = F^H F of the smaller
side, a few power steps to rank the frequencies, the top eigenvalue of the
best one's M (L^2, a lower bound of the maximum), then one Cholesky
factorisation of mu I - M per frequency with mu = L^2 (1 + delta): where it
succeeds, sigma_max(F)^2 <= mu is certified and nothing more is solved; only
the frequencies where it fails get their top eigenvalue solved. No full SVD of
the grid, and the answer is that of the full grid to relative delta.

Gram bound: every frequency's bound can only fall with each squaring, so a
frequency whose bound after t squarings is already below a proven lower bound
of the maximum (an exact top singular value) is dropped; the maximum over the
grid is unchanged.

Both make value-dependent choices (which frequencies go on), so they run
outside torch.compile graphs and torch.func transforms; the callers keep the
full-grid search there.
"""

from __future__ import annotations

import math

import torch

from . import linalg
from ._precision import tap_scale
from .spectrum._grid import dft_angles, grid_symbols

# Power steps that rank the frequencies of a block before its candidates are solved.
POWER_STEPS = 3
# Frequencies of each block solved exactly for the lower bound L.
CANDIDATES = 1


def _smaller_side(F: torch.Tensor) -> torch.Tensor:
    """(b, m, n) with m >= n: F itself or its adjoint, same singular values."""
    return F if F.shape[-2] >= F.shape[-1] else F.mH


def _frobenius(G: torch.Tensor) -> torch.Tensor:
    """Frobenius norms of a batch of complex matrices, over their real view
    (several times faster than matrix_norm on complex tensors)."""
    return torch.linalg.vector_norm(torch.view_as_real(G.conj() if G.is_conj() else G), dim=(-3, -2, -1))


def _top_sigma(X: torch.Tensor) -> torch.Tensor:
    return linalg.svdvals(X)[..., 0]


def _top_eigenvalue(M: torch.Tensor) -> torch.Tensor:
    """The largest eigenvalue of each Hermitian matrix of a batch: sigma_1^2 of
    the matrix whose Gram matrix it is, to rounding of order eps sigma_1^2
    (values only: a fraction of the SVD's cost)."""
    return torch.linalg.eigvalsh(M)[..., -1]


class _Best:
    """The largest value seen so far and the grid index (u, v) it came from."""

    def __init__(self):
        self.value, self.index = -math.inf, (0, 0)

    def offer(self, values: torch.Tensor, flat: torch.Tensor, u0: int, v0: int, n_cols: int) -> None:
        """values at block positions flat (of a block starting at (u0, v0), n_cols wide)."""
        if values.numel() == 0:
            return
        j = int(values.argmax())
        value = float(values[j])
        if value > self.value:
            i = int(flat[j])
            self.value, self.index = value, (u0 + i // n_cols, v0 + i % n_cols)


def _unit_scaled(weight: torch.Tensor) -> torch.Tensor:
    """The kernel divided by its largest tap: squared symbols neither overflow nor underflow."""
    return weight / tap_scale(weight)


def _angles(index: tuple[int, int], H: int, W: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = index
    return (torch.tensor(u * (2 * math.pi / H), dtype=torch.float64, device=device),
            torch.tensor(v * (2 * math.pi / W), dtype=torch.float64, device=device))


def top_singular_argmax(weight: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The angles (w1, w2) of the DFT grid where the top singular value of the
    symbol is largest, to relative ``n eps`` (n the smaller channel count),
    certified by a Cholesky factorisation per frequency (module docstring)."""
    c_out, c_in = weight.shape[:2]
    n = min(c_out, c_in)
    # Certification slack: a frequency within it of L may pass unsolved, so the
    # maximum found is at most delta / 2 below the true one (relative); it also
    # covers the rounding of the factorisation, about n eps.
    delta = n * torch.finfo(weight.dtype).eps
    with torch.no_grad():
        w = _unit_scaled(weight)
        rows, cols = dft_angles(H, w.device), dft_angles(W, w.device, W // 2 + 1)
        start = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        best = _Best()  # squared top singular values of the scaled kernel
        for u0, u1, v0, v1, F, _, _ in grid_symbols(w, rows, cols):
            X = _smaller_side(F.flatten(0, 1))
            M = X.mH @ X
            x = start.to(device=M.device, dtype=M.dtype).expand(M.shape[0], n, 1)
            for _ in range(POWER_STEPS):
                x = M @ x
                x = x / torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
            rayleigh = (x.mH @ (M @ x)).real.flatten()
            candidates = rayleigh.topk(min(CANDIDATES, rayleigh.numel())).indices
            best.offer(_top_eigenvalue(M[candidates]), candidates, u0, v0, v1 - v0)
            mu = max(best.value * (1 + delta), torch.finfo(w.dtype).tiny)  # > 0: a zero block certifies at once
            shifted = M.neg_()  # mu I - M in place: M itself is not needed any more
            shifted.diagonal(dim1=-2, dim2=-1).add_(mu)
            _, info = torch.linalg.cholesky_ex(shifted)
            failed = (info != 0).nonzero().flatten()  # sigma^2 may exceed mu: solve those exactly
            best.offer(mu + _top_eigenvalue(-shifted[failed]), failed, u0, v0, v1 - v0)  # M = mu I - shifted
    return _angles(best.index, H, W, weight.device)


def gram_argmax(weight: torch.Tensor, H: int, W: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The angles (w1, w2) of the DFT grid where the Gram-iteration bound after
    ``steps`` squarings is largest, with frequencies dropped as soon as their
    bound falls below an exact top singular value (module docstring)."""
    n = min(weight.shape[:2])
    tiny = torch.finfo(weight.dtype).tiny
    # a bound is dropped only when below the lower bound by more than its rounding
    margin = 1 - 64 * torch.finfo(weight.dtype).eps
    with torch.no_grad():
        w = _unit_scaled(weight)
        rows, cols = dft_angles(H, w.device), dft_angles(W, w.device, W // 2 + 1)
        lower, best = 0.0, _Best()
        for u0, u1, v0, v1, F, _, _ in grid_symbols(w, rows, cols):
            X = _smaller_side(F.flatten(0, 1))
            keep = torch.arange(X.shape[0], device=X.device)  # block positions of the frequencies still in
            log_scale = torch.zeros(X.shape[0], dtype=torch.float64, device=X.device)
            G = X
            for t in range(steps + 1):
                if keep.numel() == 0:  # the whole block is below the lower bound
                    break
                f = _frobenius(G).clamp_min(tiny)
                log_bound = (log_scale + f.log().double()) / 2**t  # log of the bound after t squarings
                if t == min(steps, 2):  # bounds are already tight: one exact value as the lower bound
                    lower = max(lower, float(_top_sigma(X[keep[log_bound.argmax()]])))
                if t == steps:
                    break
                # the rank is at most n: the bound exceeds sigma_max by at most n^(1 / 2^(t+1))
                lower = max(lower, math.exp(float(log_bound.max()) - math.log(n) / 2 ** (t + 1)))
                alive = (log_bound >= math.log(lower * margin) if lower > 0 else
                         torch.ones_like(log_bound, dtype=torch.bool)).nonzero().flatten()
                keep, G, f, log_scale = keep[alive], G[alive], f[alive], log_scale[alive]
                log_scale = 2 * (log_scale + f.log().double())
                if t == 0:  # scaled before the product: a tiny symbol must not underflow
                    G = G / f[:, None, None]
                    G = G.mH @ G
                else:  # Hermitian from the first product on: G G, scaled after (one pass, real)
                    G = G @ G
                    # clamped: a zero matrix (f clamped to tiny) stays zero rather than 0 * inf
                    scale = f.reciprocal().square().clamp_max(torch.finfo(f.dtype).max)
                    torch.view_as_real(G).mul_(scale[:, None, None, None])
            if keep.numel():
                best.offer(log_bound, keep, u0, v0, v1 - v0)
    return _angles(best.index, H, W, weight.device)
