"""Batched matrix ops on the fused kernels."""

from __future__ import annotations

import torch

from . import _checks, _ops

__all__ = ["svdvals", "svd", "cayley", "bjorck"]

MAX_BJORCK_ITERS = 1000  # the kernels' cap (csrc/bjorck_batched.h)


def svdvals(A: torch.Tensor) -> torch.Tensor:
    """Singular values of a batch of ``(..., m, n)`` real or complex matrices,
    descending, shape ``(..., min(m, n))``, real dtype. Differentiable: the
    gradient is ``U diag(g) V^H``. A matrix containing NaN or Inf gives NaN.
    Double backward, forward mode (jvp) and torch.func (grad, jacrev, hessian,
    vmap) work; nested forward mode (jacfwd of jacfwd) raises.
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
    Double backward, jvp and torch.func (grad, jacrev, hessian, vmap) work;
    jacfwd of jacfwd raises.
    """
    _checks.check_matrices(A)
    return _ops.svd(A)


def cayley(W: torch.Tensor) -> torch.Tensor:
    """Batched Cayley map of ``(..., m, n)`` real or complex matrices (MATH.md 5).

    Square: ``Q = (I + A)^{-1} (I - A)`` with ``A = W - W^H``, unitary.
    Tall (m > n): ``W = [U; V]``, ``A = U - U^H + V^H V``,
    ``Q = [(I + A)^{-1} (I - A); -2 V (I + A)^{-1}]``: orthonormal columns.
    Wide (m < n): the same on ``W^H``, transposed back: orthonormal rows.
    One fused kernel per device (Gauss-Jordan with partial pivoting, as
    accurate as ``torch.linalg.inv``; ``I + A`` is always invertible, its
    Hermitian part being positive definite); the backward is its own op
    reusing ``(I + A)^{-1}``. Double backward, jvp and torch.func (grad,
    jacrev, hessian, vmap) work, in torch ops when the backward is itself
    recorded; jacfwd of jacfwd raises.
    """
    _checks.check_matrices(W, "W")
    return _ops.cayley(W)


def bjorck(W: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Bjorck orthogonalisation of a batch of ``(..., m, n)`` real or complex
    matrices (MATH.md 6): tends to the orthogonal polar factor of each ``W``
    (orthonormal columns when tall, rows when wide; a square one is unitary).

    ``W`` is divided by a Gram-iteration upper bound of its spectral norm, so
    every singular value starts in (0, 1], then ``iters`` steps
    ``W <- 1.5 W - 0.5 W W^H W`` (``W W^H W`` formed with the smaller Gram
    matrix) take each to 1: fast for well-conditioned ``W``, while a zero
    singular value stays zero. One fused kernel keeps each matrix on chip for
    every iteration. Differentiable: the backward is its own fused op, the
    vector-Jacobian product unrolled through the same steps (the gradient of
    what was computed, exact after any number of steps, with no linear
    system to solve). NaN or Inf in a matrix gives NaN. Double backward, jvp
    and torch.func (grad, jacrev, hessian, vmap) work, in torch ops when the
    backward is itself recorded; jacfwd of jacfwd raises.
    """
    _checks.check_matrices(W, "W")
    iters = _checks.nonnegative_int(iters, "iters")
    if iters > MAX_BJORCK_ITERS:
        raise ValueError(f"iters must be <= {MAX_BJORCK_ITERS}, got {iters}")
    return _ops.bjorck(W, iters)
