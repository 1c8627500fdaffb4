"""Loads the compiled kernels, registers their shape (fake) and autograd
functions, and falls back to plain PyTorch when the library is unavailable.

Every op of ``csrc/ops.cpp`` gets here: a ``register_fake`` (so torch.compile
can trace it), a ``register_autograd`` and a ``register_vmap``. In eager mode
the package calls the ops through autograd.Functions that add what
``register_autograd`` cannot: forward-mode AD, torch.func transforms, and
backward passes that are themselves differentiable (double backward). The thin
functions at the bottom are what the rest of the package calls: they use the
compiled op when it can run on the tensor's device and the reference otherwise.
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


def _inverse_gaps(S: torch.Tensor) -> torch.Tensor:
    """F_ij = 1 / (s_j^2 - s_i^2), 0 on the diagonal (out of place: the
    backward itself may be differentiated)."""
    S2 = S * S
    diag = torch.eye(S.shape[-1], dtype=torch.bool, device=S.device)
    gaps = S2.unsqueeze(-2) - S2.unsqueeze(-1)  # s_j^2 - s_i^2 at [i, j]
    return torch.where(diag, 0.0, 1.0 / torch.where(diag, 1.0, gaps))


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
    Fm = _inverse_gaps(S).to(U.dtype)
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


def svd_jvp(U, S, Vh, dA):
    """Tangents (dU, dS, dVh) of the reduced SVD A = U diag(S) Vh along dA.

    With dP = U^H dA V: dS = Re diag(dP); U^H dU = F o (dP S + S dP^H) and
    V^H dV = F o (S dP + dP^H S) off the diagonal (F as in svd_backward), for
    complex inputs the phase gauge i Im(dP_jj) / (2 s_j) split between the two
    diagonals; plus (I - U U^H) dA V S^-1 and (I - V V^H) dA^H U S^-1 when the
    matrix is not square.
    """
    m, n, k = U.shape[-2], Vh.shape[-1], S.shape[-1]
    V = Vh.mH
    dAV = dA @ V
    dP = U.mH @ dAV
    dS = dP.diagonal(dim1=-2, dim2=-1).real
    Sc = S.to(U.dtype)
    Fm = _inverse_gaps(S).to(U.dtype)
    dX = Fm * (dP * Sc.unsqueeze(-2) + Sc.unsqueeze(-1) * dP.mH)
    dY = Fm * (Sc.unsqueeze(-1) * dP + dP.mH * Sc.unsqueeze(-2))
    if U.is_complex():
        phase = torch.diag_embed(1j * dP.diagonal(dim1=-2, dim2=-1).imag / (2 * S))
        dX, dY = dX + phase, dY - phase
    dU, dV = U @ dX, V @ dY
    Sinv = (1.0 / S).to(U.dtype).unsqueeze(-2)
    if m > k:
        dU = dU + (dAV - U @ dP) * Sinv
    if n > k:
        dV = dV + (dA.mH @ U - V @ dP.mH) * Sinv
    return dU, dS, dV.mH


def _cayley_parts(W: torch.Tensor):
    """For m >= n: V (the rows below the top n x n block U) and
    M = (I + A)^{-1}, A = U - U^H + V^H V, in differentiable torch ops."""
    n = W.shape[-1]
    U, V = W[..., :n, :], W[..., n:, :]
    A = U - U.mH + V.mH @ V
    M = torch.linalg.inv(torch.eye(n, dtype=W.dtype, device=W.device) + A)
    return V, M


def cayley_vjp(W: torch.Tensor, gQ: torch.Tensor) -> torch.Tensor:
    """The Cayley map's vector-Jacobian product in differentiable torch ops
    (what convspectra::cayley_backward computes in one kernel). For m >= n,
    Q = [2 M - I; -2 V M]: gM = 2 (gQ_top - V^H gQ_bot), gA = -M^H gM M^H,
    gU = gA - gA^H, gV = V (gA + gA^H) - 2 gQ_bot M^H; wide W through W^H."""
    m, n = W.shape[-2:]
    if m < n:
        return cayley_vjp(W.mH, gQ.mH).mH
    V, M = _cayley_parts(W)
    g_top, g_bot = gQ[..., :n, :], gQ[..., n:, :]
    gA = -(M.mH @ (2 * (g_top - V.mH @ g_bot)) @ M.mH)
    return torch.cat([gA - gA.mH, V @ (gA + gA.mH) - 2 * g_bot @ M.mH], -2)


def cayley_jvp(W: torch.Tensor, dW: torch.Tensor) -> torch.Tensor:
    """The Cayley map's tangent: dM = -M dA M, dQ = [2 dM; -2 (dV M + V dM)]."""
    m, n = W.shape[-2:]
    if m < n:
        return cayley_jvp(W.mH, dW.mH).mH
    V, M = _cayley_parts(W)
    dU, dV = dW[..., :n, :], dW[..., n:, :]
    dM = -(M @ (dU - dU.mH + dV.mH @ V + V.mH @ dV) @ M)
    return torch.cat([2 * dM, -2 * (dV @ M + V @ dM)], -2)


def bjorck_vjp(X: torch.Tensor, grad: torch.Tensor, iters: int) -> torch.Tensor:
    """The Bjorck steps' vector-Jacobian product in differentiable torch ops
    (what convspectra::bjorck_backward computes in one kernel): through
    Y' = 1.5 Y - 0.5 Y Y^H Y, G <- 1.5 G - 0.5 (G Y^H Y + Y G^H Y + Y Y^H G),
    iterates kept; a wide X through X^H (the smaller Gram matrix)."""
    if X.shape[-2] < X.shape[-1]:
        return bjorck_vjp(X.mH, grad.mH, iters).mH
    iterates, Y = [], X
    for _ in range(iters):
        iterates.append(Y)
        Y = 1.5 * Y - 0.5 * Y @ (Y.mH @ Y)
    G = grad
    for Y in reversed(iterates):
        G = 1.5 * G - 0.5 * (G @ (Y.mH @ Y) + Y @ (G.mH @ Y) + Y @ (Y.mH @ G))
    return G


def bjorck_jvp(X: torch.Tensor, dX: torch.Tensor, iters: int) -> torch.Tensor:
    """The Bjorck steps' tangent, carried through the same iteration."""
    if X.shape[-2] < X.shape[-1]:
        return bjorck_jvp(X.mH, dX.mH, iters).mH
    Y, dY = X, dX
    for _ in range(iters):
        B = Y.mH @ Y
        Y, dY = 1.5 * Y - 0.5 * Y @ B, 1.5 * dY - 0.5 * (dY @ B + Y @ (dY.mH @ Y + Y.mH @ dY))
    return dY


def differentiating_backward() -> bool:
    """Whether a backward running now is itself recorded (create_graph=True,
    or under a torch.func transform): it then computes with differentiable
    torch ops (and the autograd-aware wrappers below) instead of the fused
    backward kernels, which autograd cannot see through. Never while
    torch.compile traces: it keeps the fused kernels and supports no double
    backward anyway."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


try:
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters as _functorch_interpreters
    from torch._C._functorch import TransformType as _TransformType
except ImportError:  # a torch without these internals: nothing to detect
    _functorch_interpreters = None


def functorch_active() -> bool:
    """Whether a torch.func transform (grad, vmap, jvp, ...) is running."""
    return _functorch_interpreters is not None and bool(_functorch_interpreters())


def check_forward_level(name: str) -> None:
    """Raises in a jvp rule under nested forward-mode transforms
    (torch.func.jacfwd(torch.func.jacfwd(f))): torch.func does not show the
    outer level what an autograd.Function's jvp computes, so the result would
    be silently wrong. Forward over reverse (torch.func.hessian) is fine."""
    if _functorch_interpreters is None:
        return
    if sum(i.key() == _TransformType.Jvp for i in _functorch_interpreters()) > 1:
        raise RuntimeError(f"{name}: nested forward-mode AD (e.g. jacfwd(jacfwd(f))) is not supported; "
                           "use torch.func.hessian (forward over reverse) or jacrev(jacrev(f))")


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
        if differentiating_backward():
            return cayley_vjp(W, grad_Q)
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
        if differentiating_backward():
            return bjorck_vjp(X, grad, ctx.iters), None
        return torch.ops.convspectra.bjorck_backward(grad, X, ctx.iters), None

    torch.library.register_autograd("convspectra::bjorck", _bjorck_backward, setup_context=_bjorck_setup_context)

    def _batch_rule(name: str, n_outputs: int):
        """A vmap rule for an op batched over leading dims: the vmapped dim
        moves to the front (unbatched tensor arguments are expanded), one call."""
        op = getattr(torch.ops.convspectra, name)

        def rule(info, in_dims, *args):
            args = [
                (a.movedim(d, 0) if d is not None else a.expand(info.batch_size, *a.shape))
                if isinstance(a, torch.Tensor) else a
                for a, d in zip(args, in_dims)
            ]
            return op(*args), ((0,) * n_outputs if n_outputs > 1 else 0)

        torch.library.register_vmap(f"convspectra::{name}", rule)

    for _name, _n in (("svdvals", 1), ("svd", 3), ("gram_bound", 1), ("cayley", 2), ("cayley_backward", 1),
                      ("bjorck", 1), ("bjorck_backward", 1)):
        _batch_rule(_name, _n)


# What the package calls in eager mode: autograd.Functions around the ops with
# every rule torch.func needs (setup_context, a jvp, vmap through the ops'
# batching rules), and backward passes that are themselves differentiable when
# recorded (differentiating_backward). torch.compile traces the ops instead
# (Dynamo cannot trace a custom jvp; the ops' registered autograd is the same).


class _SVD(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A):
        return torch.ops.convspectra.svd(A)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # see _svd_setup_context
        ctx.save_for_backward(*output)
        ctx.save_for_forward(*output)

    @staticmethod
    def backward(ctx, gU, gS, gVh):
        # plain torch ops on the saved factors: differentiated, they lead back here
        return svd_backward(*ctx.saved_tensors, gU, gS, gVh)

    @staticmethod
    def jvp(ctx, dA):
        check_forward_level("convspectra.linalg.svd")
        return svd_jvp(*ctx.saved_tensors, dA)


class _SVDVals(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A):
        return torch.ops.convspectra.svdvals(A)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, gS):
        (A,) = ctx.saved_tensors
        U, _, Vh = _SVD.apply(A) if differentiating_backward() else torch.ops.convspectra.svd(A)
        return _scale_columns(U, gS) @ Vh

    @staticmethod
    def jvp(ctx, dA):
        check_forward_level("convspectra.linalg.svdvals")
        (A,) = ctx.saved_tensors
        U, _, Vh = _SVD.apply(A)
        return (U.mH @ dA @ Vh.mH).diagonal(dim1=-2, dim2=-1).real


class _GramBound(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A, steps):
        return torch.ops.convspectra.gram_bound(A, steps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.steps = inputs[1]
        ctx.save_for_backward(inputs[0], output)
        ctx.save_for_forward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad):
        A, bound = ctx.saved_tensors  # differentiable: the bound leads back here
        return gram_bound_gradient(A, bound, ctx.steps) * grad[..., None, None].to(A.dtype), None

    @staticmethod
    def jvp(ctx, dA, _):
        check_forward_level("convspectra (Gram-iteration bound)")
        A, bound = ctx.saved_tensors
        return (gram_bound_gradient(A, bound, ctx.steps).conj() * dA).sum((-2, -1)).real


class _Cayley(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(W):
        return torch.ops.convspectra.cayley(W)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(inputs[0], output[1])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad_Q, _):
        W, M = ctx.saved_tensors
        if differentiating_backward():
            return cayley_vjp(W, grad_Q)
        return torch.ops.convspectra.cayley_backward(grad_Q, W, M)

    @staticmethod
    def jvp(ctx, dW):
        check_forward_level("convspectra.linalg.cayley")
        (W,) = ctx.saved_tensors
        return cayley_jvp(W, dW), None


class _Bjorck(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(X, iters):
        return torch.ops.convspectra.bjorck(X, iters)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.iters = inputs[1]
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (X,) = ctx.saved_tensors
        if differentiating_backward():
            return bjorck_vjp(X, grad, ctx.iters), None
        return torch.ops.convspectra.bjorck_backward(grad, X, ctx.iters), None

    @staticmethod
    def jvp(ctx, dX, _):
        check_forward_level("convspectra.linalg.bjorck")
        (X,) = ctx.saved_tensors
        return bjorck_jvp(X, dX, ctx.iters)


def _apply(function, op, *args):
    """function.apply in eager mode, the op itself while torch.compile traces."""
    return op(*args) if torch.compiler.is_compiling() else function.apply(*args)


class _RaiseOnDerivative(torch.autograd.Function):
    """Identity on x, connected to x and to source (a tensor x was computed
    from without autograd, or None): any derivative through it, backward or
    jvp, raises RuntimeError(message)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, source, message):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[2]

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(ctx.message)

    @staticmethod
    def jvp(ctx, *_):
        raise RuntimeError(ctx.message)


class _FirstOrderOnly(torch.autograd.Function):
    """Identity whose gradient, when the backward is recorded, cannot be
    differentiated again."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, name):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.name = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        if not differentiating_backward():
            return grad, None
        message = (f"{ctx.name}: double backward is not supported; its gradient is exact to first order only "
                   "(a vector found without autograd is held fixed)")
        return _RaiseOnDerivative.apply(grad, None, message), None

    @staticmethod
    def jvp(ctx, dx, _):
        return dx


def not_differentiable(out: torch.Tensor, source: torch.Tensor, name: str) -> torch.Tensor:
    """out, computed from source without autograd; a derivative of it raises."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return out
    return _RaiseOnDerivative.apply(out, source, f"{name} is not differentiable (a projection step, meant for "
                                                 "use between optimiser steps under torch.no_grad())")


def first_order_only(x: torch.Tensor, name: str) -> torch.Tensor:
    """x, for a result whose autograd graph gives the right gradient but not
    the right second derivative (e.g. a norm ||T(w) y|| with its singular
    vector y found without autograd): a second differentiation through x
    (double backward, torch.func.hessian) raises instead of returning a
    wrong Hessian. First-order reverse and forward mode are unchanged; under
    torch.compile (no double backward there) x itself."""
    return x if torch.compiler.is_compiling() else _FirstOrderOnly.apply(x, name)


def svdvals(A: torch.Tensor) -> torch.Tensor:
    """Batched singular values through the fused op (reference if unavailable)."""
    if _compiled_for(A):
        return _apply(_SVDVals, torch.ops.convspectra.svdvals, A)
    return torch.linalg.svdvals(A)


def cayley(W: torch.Tensor) -> torch.Tensor:
    """Batched Cayley map through the fused op (reference if unavailable)."""
    if _compiled_for(W):
        return _apply(_Cayley, torch.ops.convspectra.cayley, W)[0]
    return reference.cayley(W)


def bjorck(W: torch.Tensor, iters: int) -> torch.Tensor:
    """Prescaled Bjorck orthogonalisation through the fused op (reference if unavailable)."""
    if not _compiled_for(W):
        return reference.bjorck(W, iters)
    tiny = torch.finfo(W.real.dtype).tiny
    scale = gram_bound(W, reference.BJORCK_PRESCALE_STEPS).clamp_min(tiny)
    return _apply(_Bjorck, torch.ops.convspectra.bjorck, W / scale[..., None, None], iters)


def gram_bound(A: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-matrix Gram-iteration bound of ||A||_2 through the fused op."""
    if _compiled_for(A):
        return _apply(_GramBound, torch.ops.convspectra.gram_bound, A, steps)
    return reference.gram_bound(A, steps)


def svd(A: torch.Tensor):
    """Batched reduced SVD through the fused op (reference if unavailable)."""
    if _compiled_for(A):
        return _apply(_SVD, torch.ops.convspectra.svd, A)
    return torch.linalg.svd(A, full_matrices=False)
