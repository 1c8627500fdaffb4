"""Loads the compiled kernels, registers their shape (fake) and autograd
functions, and falls back to plain PyTorch when the library is unavailable.

Every op of ``csrc/ops.cpp`` gets here: a ``register_fake`` (so torch.compile
can trace it) and a ``register_autograd``. The thin functions at the bottom are
what the rest of the package calls: they use the compiled op when it can run on
the tensor's device and the reference otherwise.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from . import reference

LIBRARY_PATH = Path(__file__).with_name("_C.so")

load_error: str | None = None
try:
    torch.ops.load_library(str(LIBRARY_PATH))
    COMPILED = True
except (OSError, RuntimeError) as exc:  # missing file, ABI mismatch, unresolved symbol
    COMPILED = False
    load_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"convspectra: the compiled library could not be loaded ({load_error}); "
        "running on the plain-PyTorch reference (slower, more memory).",
        RuntimeWarning,
        stacklevel=2,
    )

try:
    from . import _build_info
except ImportError:  # running from a source tree that was never built
    _build_info = None

CUDA_KERNELS = bool(COMPILED and _build_info is not None and _build_info.CUDA)

_warned_cuda_fallback = False


def _compiled_for(t: torch.Tensor) -> bool:
    """Whether the compiled op can run on t's device (warns once if not)."""
    global _warned_cuda_fallback
    if not COMPILED:
        return False
    if t.device.type == "cpu" or (t.device.type == "cuda" and CUDA_KERNELS):
        return True
    if not _warned_cuda_fallback:
        _warned_cuda_fallback = True
        warnings.warn(
            f"convspectra: no compiled kernels for device {t.device.type!r} in this build; "
            "using the plain-PyTorch reference there.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _scale_columns(U: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """U @ diag(g) for batched U (..., m, k) and real g (..., k)."""
    return U * g.unsqueeze(-2).to(U.dtype)


def svd_backward(U, S, Vh, gU, gS, gVh):
    """Gradient of the reduced SVD A = U diag(S) Vh (real or complex).

    With P-space gradient gP (A = U P Vh locally):
      gP = F o (M - M^H) S + diag(gS) + S F o (N - N^H) + i diag(Im(M - N)) / (2 S)
      M = U^H gU, N = V^H gV, F_ij = 1 / (s_j^2 - s_i^2) (0 on the diagonal),
    plus the parts of gU, gV outside the column spaces of U and V. The last
    term of gP only exists for complex inputs; for a gauge-invariant loss
    Im M_jj = -Im N_jj. A loss of S alone needs only U diag(gS) Vh, which stays
    finite with repeated singular values.
    """
    if gU is None and gVh is None:
        return _scale_columns(U, gS) @ Vh if gS is not None else None
    m, n = U.shape[-2], Vh.shape[-1]
    V = Vh.mH
    Sc = S.to(U.dtype)
    S2 = S * S
    Fm = S2.unsqueeze(-2) - S2.unsqueeze(-1)  # s_j^2 - s_i^2 at [i, j]
    Fm.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    Fm = (1.0 / Fm).to(U.dtype)
    Fm.diagonal(dim1=-2, dim2=-1).zero_()
    gP = torch.zeros(U.shape[:-2] + (S.shape[-1], S.shape[-1]), dtype=U.dtype, device=U.device)
    if gS is not None:
        gP = gP + torch.diag_embed(gS.to(U.dtype))
    if gU is not None:
        M = U.mH @ gU
        gP = gP + (Fm * (M - M.mH)) * Sc.unsqueeze(-2)
        if U.is_complex():
            gP = gP + torch.diag_embed(1j * M.diagonal(dim1=-2, dim2=-1).imag / (2 * S))
    if gVh is not None:
        gV = gVh.mH
        N = V.mH @ gV
        gP = gP + Sc.unsqueeze(-1) * (Fm * (N - N.mH))
        if U.is_complex():
            gP = gP - torch.diag_embed(1j * N.diagonal(dim1=-2, dim2=-1).imag / (2 * S))
    gA = U @ gP @ Vh
    Sinv = (1.0 / S).to(U.dtype)
    if gU is not None and m > S.shape[-1]:
        proj = gU - U @ (U.mH @ gU)
        gA = gA + (proj * Sinv.unsqueeze(-2)) @ Vh
    if gVh is not None and n > S.shape[-1]:
        gV = gVh.mH
        proj = gV - V @ (V.mH @ gV)
        gA = gA + (U * Sinv.unsqueeze(-2)) @ proj.mH
    return gA


def gram_bound_gradient(A: torch.Tensor, bound: torch.Tensor, steps: int) -> torch.Tensor:
    """d bound / d A of the Gram-iteration bound, in closed form.

    With B = A^H A and p = 2^steps the bound is tr(B^p)^(1 / 2p) (the Frobenius
    norm of the last Gram matrix B^(p/2)), whose gradient is
    bound * A B^(p-1) / tr(B^p); written scale-free with X = A / bound (every
    power then has norm <= 1, nothing overflows): X B_X^(p-1) / tr(B_X^p).
    B_X^(p-1) is the product of B_X^(2^j), j < steps, instead of
    differentiating through the iteration.
    """
    wide = A.shape[-2] < A.shape[-1]
    X = A.mH if wide else A
    safe = torch.where(bound > 0, bound, torch.ones_like(bound))
    X = X / safe[..., None, None].to(A.dtype)
    square = X.mH @ X  # B_X^(2^j) for j = 0, 1, ...
    power = None  # B_X^(2^j - 1)
    for j in range(steps):
        power = square if power is None else power @ square
        if j + 1 < steps:
            square = square @ square
    # tr(B_X^p) = ||B_X^(p/2)||_F^2: the last squaring is never formed
    trace = torch.linalg.matrix_norm(square).square() if steps else square.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    trace = torch.where(bound > 0, trace, torch.ones_like(trace))
    g = (X if power is None else X @ power) / trace[..., None, None].to(A.dtype)
    g = torch.where((bound > 0)[..., None, None], g, torch.zeros_like(g))
    return g.mH if wide else g


if COMPILED:

    @torch.library.register_fake("convspectra::svdvals")
    def _svdvals_fake(A):
        m, n = A.shape[-2], A.shape[-1]
        return A.new_empty((*A.shape[:-2], torch.sym_min(m, n)), dtype=_real_dtype(A.dtype))

    @torch.library.register_fake("convspectra::svd")
    def _svd_fake(A):
        m, n = A.shape[-2], A.shape[-1]
        k = torch.sym_min(m, n)
        batch = A.shape[:-2]
        return (
            A.new_empty((*batch, m, k)),
            A.new_empty((*batch, k), dtype=_real_dtype(A.dtype)),
            A.new_empty((*batch, k, n)),
        )

    def _svdvals_setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def _svdvals_backward(ctx, gS):
        (A,) = ctx.saved_tensors
        # Vectors are only needed here; convspectra.linalg.svdvals avoids this
        # second solve by calling the svd op directly when A requires grad.
        U, _, Vh = torch.ops.convspectra.svd(A)
        return _scale_columns(U, gS) @ Vh

    torch.library.register_autograd(
        "convspectra::svdvals", _svdvals_backward, setup_context=_svdvals_setup_context
    )

    def _svd_setup_context(ctx, inputs, output):
        # Unused outputs must arrive as None, not zeros: a loss of S alone then
        # skips the 1 / (s_j^2 - s_i^2) terms (infinite for repeated values).
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*output)

    def _svd_backward(ctx, gU, gS, gVh):
        U, S, Vh = ctx.saved_tensors
        return svd_backward(U, S, Vh, gU, gS, gVh)

    torch.library.register_autograd("convspectra::svd", _svd_backward, setup_context=_svd_setup_context)

    @torch.library.register_fake("convspectra::gram_bound")
    def _gram_bound_fake(A, steps):
        return A.new_empty(A.shape[:-2], dtype=_real_dtype(A.dtype))

    def _gram_bound_setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)
        ctx.steps = inputs[1]

    def _gram_bound_backward(ctx, grad):
        A, bound = ctx.saved_tensors
        return gram_bound_gradient(A, bound, ctx.steps) * grad[..., None, None].to(A.dtype), None

    torch.library.register_autograd(
        "convspectra::gram_bound", _gram_bound_backward, setup_context=_gram_bound_setup_context
    )

    @torch.library.register_fake("convspectra::cayley")
    def _cayley_fake(W):
        k = torch.sym_min(W.shape[-2], W.shape[-1])
        return W.new_empty(W.shape), W.new_empty((*W.shape[:-2], k, k))

    @torch.library.register_fake("convspectra::cayley_backward")
    def _cayley_backward_fake(grad_Q, W, M):
        return W.new_empty(W.shape)

    def _cayley_setup_context(ctx, inputs, output):
        Q, M = output
        ctx.mark_non_differentiable(M)  # (I + A)^{-1}, kept for the backward
        ctx.save_for_backward(inputs[0], M)

    def _cayley_backward(ctx, grad_Q, grad_M):
        W, M = ctx.saved_tensors
        return torch.ops.convspectra.cayley_backward(grad_Q, W, M)

    torch.library.register_autograd("convspectra::cayley", _cayley_backward, setup_context=_cayley_setup_context)

    @torch.library.register_fake("convspectra::bjorck")
    def _bjorck_fake(X, iters):
        return X.new_empty(X.shape)

    @torch.library.register_fake("convspectra::bjorck_backward")
    def _bjorck_backward_fake(grad, X, iters):
        return X.new_empty(X.shape)

    def _bjorck_setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])  # the backward recomputes the iterates from X
        ctx.iters = inputs[1]

    def _bjorck_backward(ctx, grad):
        (X,) = ctx.saved_tensors
        return torch.ops.convspectra.bjorck_backward(grad, X, ctx.iters), None

    torch.library.register_autograd("convspectra::bjorck", _bjorck_backward, setup_context=_bjorck_setup_context)


def svdvals(A: torch.Tensor) -> torch.Tensor:
    """Batched singular values through the fused op (reference if unavailable)."""
    if _compiled_for(A):
        return torch.ops.convspectra.svdvals(A)
    return torch.linalg.svdvals(A)


def cayley(W: torch.Tensor) -> torch.Tensor:
    """Batched Cayley map through the fused op (reference if unavailable)."""
    if _compiled_for(W):
        return torch.ops.convspectra.cayley(W)[0]
    return reference.cayley(W)


def bjorck(W: torch.Tensor, iters: int) -> torch.Tensor:
    """Prescaled Bjorck orthogonalisation through the fused op (reference if unavailable)."""
    if not _compiled_for(W):
        return reference.bjorck(W, iters)
    tiny = torch.finfo(W.real.dtype).tiny
    scale = gram_bound(W, reference.BJORCK_PRESCALE_STEPS).clamp_min(tiny)
    return torch.ops.convspectra.bjorck(W / scale[..., None, None], iters)


def gram_bound(A: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-matrix Gram-iteration bound of ||A||_2 through the fused op."""
    if _compiled_for(A):
        return torch.ops.convspectra.gram_bound(A, steps)
    return reference.gram_bound(A, steps)


def svd(A: torch.Tensor):
    """Batched reduced SVD through the fused op (reference if unavailable)."""
    if _compiled_for(A):
        return torch.ops.convspectra.svd(A)
    return torch.linalg.svd(A, full_matrices=False)
