"""Batched matrix ops on the fused kernels: the public matrix API, and the one
place that chooses between a compiled op and its plain-PyTorch fallback."""

from __future__ import annotations

import warnings

import torch

from . import _autograd, _checks, _ops
from ._precision import full_float32, in_full_float32

__all__ = ["svdvals", "svd", "gram_bound", "cayley", "bjorck"]

MAX_BJORCK_ITERS = _ops.MAX_BJORCK_ITERS  # the kernels' cap (csrc/common/limits.h)
MAX_GRAM_STEPS = _ops.MAX_GRAM_STEPS
# Gram-iteration squarings of the Bjorck prescale: a bound within a factor
# r^(1/16) of the norm for rank r (<= 1.48 for r <= 512), cheap, and enough to
# start every singular value in (0, 1] (docs/math.md §6).
BJORCK_PRESCALE_STEPS = 3

_warned_cuda_fallback = False


def _compiled_for(t: torch.Tensor) -> bool:
    """Whether the compiled op can run on t's device (warns once if not)."""
    global _warned_cuda_fallback
    if not _ops.COMPILED:
        return False
    if t.device.type == "cpu" or (t.device.type == "cuda" and _ops.CUDA_KERNELS):
        return True
    if not _warned_cuda_fallback:
        _warned_cuda_fallback = True
        warnings.warn(
            f"convspectra: no compiled kernels for device {t.device.type!r} in this build; "
            "using the plain-PyTorch reference there.",
            RuntimeWarning,
            stacklevel=4,
        )
    return False


def _fallback(name: str, *args):
    """The plain-PyTorch version of an op, where no compiled kernel can run it
    (imported here only: the fast path stays independent of the oracle)."""
    from . import reference

    with full_float32():
        return getattr(reference, name)(*args)


@in_full_float32
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
        return svd(A)[1]
    if _compiled_for(A):
        return _autograd.apply_op(_autograd.SVDVals, torch.ops.convspectra.svdvals, A)
    return torch.linalg.svdvals(A)


@in_full_float32
def svd(A: torch.Tensor):
    """Reduced SVD ``A = U diag(S) Vh`` of a batch of ``(..., m, n)`` matrices:
    U ``(..., m, k)``, S ``(..., k)`` descending, Vh ``(..., k, n)``,
    ``k = min(m, n)``. Differentiable (losses on U and Vh must be invariant
    to the phase of each singular vector pair, as for ``torch.linalg.svd``).
    Double backward, jvp and torch.func (grad, jacrev, hessian, vmap) work;
    jacfwd of jacfwd raises.
    """
    _checks.check_matrices(A)
    if _compiled_for(A):
        return _autograd.apply_op(_autograd.SVD, torch.ops.convspectra.svd, A)
    return torch.linalg.svd(A, full_matrices=False)


@in_full_float32
def gram_bound(A: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """An upper bound of the spectral norm of each of a batch of ``(..., m, n)``
    matrices by Gram iteration (Delattre et al. 2023, docs/math.md §8): shape
    ``(...)``, real dtype. After ``steps`` squarings it exceeds the norm by at
    most a factor ``r^(1 / 2^(steps + 1))`` for rank ``r``; ``steps=0`` gives
    the Frobenius norm. Differentiable (the gradient in closed form), also in
    forward mode and under torch.func. A matrix containing NaN or Inf gives NaN.
    """
    _checks.check_matrices(A)
    steps = _checks.int_in_range(steps, "steps", 0, MAX_GRAM_STEPS)
    if _compiled_for(A):
        return _autograd.apply_op(_autograd.GramBound, torch.ops.convspectra.gram_bound, A, steps)
    return _fallback("gram_bound", A, steps)


@in_full_float32
def cayley(W: torch.Tensor) -> torch.Tensor:
    """Batched Cayley map of ``(..., m, n)`` real or complex matrices (docs/math.md §5).

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
    if _compiled_for(W):
        return _autograd.apply_op(_autograd.Cayley, torch.ops.convspectra.cayley, W)[0]
    return _fallback("cayley", W)


@in_full_float32
def bjorck(W: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Bjorck orthogonalisation of a batch of ``(..., m, n)`` real or complex
    matrices (docs/math.md §6): tends to the orthogonal polar factor of each ``W``
    (orthonormal columns when tall, rows when wide; a square one is unitary).

    ``W`` is divided by a Gram-iteration upper bound of its spectral norm
    (``BJORCK_PRESCALE_STEPS`` squarings), so every singular value starts in
    (0, 1], then ``iters`` steps ``W <- 1.5 W - 0.5 W W^H W`` (``W W^H W``
    formed with the smaller Gram matrix) take each to 1: fast for
    well-conditioned ``W``, while a zero singular value stays zero. One fused
    kernel keeps each matrix on chip for every iteration. Differentiable: the
    backward is its own fused op, the vector-Jacobian product unrolled through
    the same steps (the gradient of what was computed, exact after any number
    of steps, with no linear system to solve). NaN or Inf in a matrix gives
    NaN. Double backward, jvp and torch.func (grad, jacrev, hessian, vmap)
    work, in torch ops when the backward is itself recorded; jacfwd of jacfwd
    raises.
    """
    _checks.check_matrices(W, "W")
    iters = _checks.int_in_range(iters, "iters", 0, MAX_BJORCK_ITERS)
    if not _compiled_for(W):
        return _fallback("bjorck", W, iters)
    tiny = torch.finfo(W.real.dtype).tiny
    scale = gram_bound(W, BJORCK_PRESCALE_STEPS).clamp_min(tiny)
    return _autograd.apply_op(_autograd.Bjorck, torch.ops.convspectra.bjorck, W / scale[..., None, None], iters)
