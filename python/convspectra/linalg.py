"""Batched matrix ops on the fused kernels."""

from __future__ import annotations

import torch

from . import _checks, _ops

__all__ = ["svdvals", "svd", "cayley"]


def svdvals(A: torch.Tensor) -> torch.Tensor:
    """Singular values of a batch of ``(..., m, n)`` real or complex matrices,
    descending, shape ``(..., min(m, n))``, real dtype. Differentiable: the
    gradient is ``U diag(g) V^H``. A matrix containing NaN or Inf gives NaN.
    """
    _checks.check_matrices(A)
    if A.requires_grad and torch.is_grad_enabled():
        # One solve that also keeps the vectors the backward needs.
        return _ops.svd(A)[1]
    return _ops.svdvals(A)


def svd(A: torch.Tensor):
    """Reduced SVD ``A = U diag(S) Vh`` of a batch of ``(..., m, n)`` matrices:
    U ``(..., m, k)``, S ``(..., k)`` descending, Vh ``(..., k, n)``,
    ``k = min(m, n)``. Differentiable (losses on U and Vh must be invariant
    to the phase of each singular vector pair, as for ``torch.linalg.svd``).
    """
    _checks.check_matrices(A)
    return _ops.svd(A)


def cayley(W: torch.Tensor) -> torch.Tensor:
    """Batched Cayley map of ``(..., m, n)`` real or complex matrices (MATH.md 5).

    Square: ``Q = (I + A)^{-1} (I - A)`` with ``A = W - W^H``, unitary.
    Tall (m > n): ``W = [U; V]``, ``A = U - U^H + V^H V``,
    ``Q = [(I + A)^{-1} (I - A); -2 V (I + A)^{-1}]``: orthonormal columns.
    Wide (m < n): the same on ``W^H``, transposed back: orthonormal rows.
    One fused kernel per device (Gauss-Jordan without pivoting: the Hermitian
    part of ``I + A`` is positive definite); the backward is its own op reusing
    ``(I + A)^{-1}``.
    """
    _checks.check_matrices(W, "W")
    return _ops.cayley(W)
