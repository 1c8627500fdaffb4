"""The spectral norm of a conv layer and its bounds (docs/math.md §11): exact
per-frequency maxima, the certified grid for zero padding, Gram iteration, tap
bounds, and the exact zero-padded norm by Lanczos on the true operator."""

from __future__ import annotations

import math
import warnings

import torch

from . import _autograd, _checks, _norm_search, _precision, linalg
from ._precision import in_full_float32
from .spectrum._grid import dft_angles, grid_symbols, symbol_at

__all__ = ["spectral_norm", "NORM_METHODS"]

NORM_METHODS = ("exact", "certified", "gram", "sum_taps", "reshape", "l1")
CHEAP_METHODS = ("sum_taps", "reshape", "l1")
# Gram iteration squarings: the bound exceeds the norm by at most a factor
# r^(1 / 2^(steps+1)) for rank r, i.e. 0.31 % for any r <= 512 at 10 steps.
GRAM_STEPS = 10
MAX_GRAM_STEPS = linalg.MAX_GRAM_STEPS


@in_full_float32
def spectral_norm(
    weight: torch.Tensor,
    input_size=None,
    padding: str = "circular",
    method: str = "exact",
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    steps: int = GRAM_STEPS,
) -> torch.Tensor:
    """Spectral norm of the conv layer, or a bound of it: a differentiable 0-dim tensor.

    method:

      - ``"exact"``: circular padding, the largest per-frequency singular value
        (docs/math.md §3.1); zero padding ('same'), the norm of the true operator by
        Lanczos on ``conv2d`` / ``conv_transpose2d`` to relative accuracy
        ``tol``, at most ``max_iter`` operator applications.
      - ``"certified"``: an upper bound guaranteed for zero padding of any input
        up to ``input_size``: the circular norm on the ``(H+kh-1) x (W+kw-1)``
        grid (docs/math.md §4.2). For circular padding, the exact norm.
      - ``"gram"``: Gram iteration on the symbol (Delattre et al. 2023), an upper
        bound after every one of its ``steps`` squarings; on the circular grid,
        or on the certified grid for zero padding.
      - ``"sum_taps"``, ``"reshape"``, ``"l1"``: bounds from the taps alone
        (docs/math.md §4.2 (a)-(c)), valid for every input size and both paddings;
        ``input_size`` is not needed.

    Each option is checked, and used, only by the method it belongs to:
    ``tol`` and ``max_iter`` by ``padding="zeros", method="exact"``, ``steps``
    (0 to 60) by ``method="gram"``; the others ignore them.

    Maxima over frequencies are searched without autograd; the gradient flows
    through the maximising frequency (a subgradient at ties). Double backward,
    forward mode (jvp) and torch.func (grad, jacrev, hessian) work for every
    method but ``padding="zeros", method="exact"``, which is differentiable
    once (its Ritz vector is held fixed); jacfwd of jacfwd raises.
    """
    _checks.check_weight(weight)
    padding = _checks.check_padding(padding)
    if method not in NORM_METHODS:
        raise ValueError(f"method must be one of {NORM_METHODS}, got {method!r}")
    tol, max_iter, steps = check_norm_options(method, padding, tol=tol, max_iter=max_iter, steps=steps)
    if method in CHEAP_METHODS:
        bound = _tap_bound(weight, method)
        # NaN for NaN or Inf taps, as every other method (the Schur test alone would give Inf)
        return torch.where(torch.isfinite(weight).all(), bound, float("nan"))
    if input_size is None:
        raise ValueError(f"input_size is required for method={method!r}")
    H, W = _checks.input_size_pair(input_size, weight)
    kh, kw = weight.shape[-2:]
    if method == "exact" and padding == "zeros":
        return zero_padded_norm(weight, H, W, tol, max_iter)
    if padding == "zeros":
        # the full conv is a column subset of the circular conv on this grid,
        # the 'same' conv a row subset of the full one (docs/math.md §4.2); for
        # circular padding "certified" is the exact norm itself
        H, W = H + kh - 1, W + kw - 1
    if method == "gram":
        return linalg.gram_bound(symbol_at(weight, *gram_frequency(weight, H, W, steps)), steps)
    return top_singular_value(symbol_at(weight, *top_frequency(weight, H, W)))


def check_norm_options(method: str, padding: str, *, tol: float = 1e-6, max_iter: int = 1000,
                       steps: int = GRAM_STEPS) -> tuple[float, int, int]:
    """spectral_norm's keyword options (tol, max_iter, steps), each checked
    where ``method`` and ``padding`` use it and passed through otherwise."""
    if method == "exact" and padding == "zeros":
        tol = _checks.positive_float(tol, "tol")
        max_iter = _checks.positive_int(max_iter, "max_iter")
    if method == "gram":
        steps = _checks.int_in_range(steps, "steps", 0, MAX_GRAM_STEPS)
    return tol, max_iter, steps


def top_singular_value(A: torch.Tensor) -> torch.Tensor:
    return linalg.svdvals(A)[..., 0]


def argmax_frequency(weight: torch.Tensor, H: int, W: int, per_matrix):
    """The angles (w1, w2) of the DFT grid that maximise per_matrix(F(w)), as
    0-dim tensors (no .item(): torch.compile keeps one graph). Chunked over the
    half grid, without autograd."""
    with torch.no_grad():
        rows, cols = dft_angles(H, weight.device), dft_angles(W, weight.device, W // 2 + 1)
        best = weight.new_empty(rows.numel(), cols.numel())  # new_empty: batched too under vmap
        for u0, u1, v0, v1, F, _, _ in grid_symbols(weight, rows, cols):
            best[u0:u1, v0:v1] = per_matrix(F)
        flat = best.flatten().argmax()
    u, v = flat // cols.numel(), flat % cols.numel()
    return u.double() * (2 * math.pi / H), v.double() * (2 * math.pi / W)


def _full_grid_search(weight: torch.Tensor) -> bool:
    """Whether the argmax must come from solving every frequency: inside a
    torch.compile graph or a torch.func transform (the pruned searches choose by
    value), or for a kernel with NaN or Inf (which the full grid propagates)."""
    if torch.compiler.is_compiling() or _autograd.functorch_active():
        return True
    return not bool(torch.isfinite(weight).all())


def top_frequency(weight: torch.Tensor, H: int, W: int):
    """The angles where the symbol's top singular value is largest (the
    certified search of _norm_search, or the full grid where it cannot run)."""
    if _full_grid_search(weight):
        return argmax_frequency(weight, H, W, top_singular_value)
    return _norm_search.top_singular_argmax(weight, H, W)


def gram_frequency(weight: torch.Tensor, H: int, W: int, steps: int):
    """The angles where the Gram bound after ``steps`` squarings is largest."""
    if _full_grid_search(weight):
        return argmax_frequency(weight, H, W, lambda A: linalg.gram_bound(A, steps))
    return _norm_search.gram_argmax(weight, H, W, steps)


def _tap_bound(weight: torch.Tensor, method: str) -> torch.Tensor:
    """Bounds of ||T|| from the taps K_st alone, for any input size and both
    paddings: T = sum_st K_st (x) S_st with shifts S_st of norm <= 1."""
    c_out, c_in, kh, kw = weight.shape
    if method == "sum_taps":  # triangle inequality
        return top_singular_value(weight.permute(2, 3, 0, 1).reshape(kh * kw, c_out, c_in)).sum()
    if method == "reshape":  # T = [K_00 ... K_st] stack(S_st x), ||stack|| <= sqrt(kh kw) ||x||
        wide = top_singular_value(weight.reshape(c_out, c_in * kh * kw))
        tall = top_singular_value(weight.transpose(0, 1).reshape(c_in, c_out * kh * kw))
        return (kh * kw) ** 0.5 * torch.minimum(wide, tall)
    # "l1": Schur test on |T|, whose row / column sums are at most those of a
    a = weight.abs().sum((2, 3))
    rows, cols = a.sum(1).max(), a.sum(0).max()
    # sqrt of each, not of the product (which overflows float32 from 1e20 kernels);
    # a zero kernel gets 0 with gradient 0, not sqrt'(0) = inf times 0
    nonzero = rows > 0
    one = torch.ones_like(rows)
    return torch.where(nonzero, torch.where(nonzero, rows, one).sqrt() * torch.where(nonzero, cols, one).sqrt(),
                       torch.zeros_like(rows))


def _same_padding(weight) -> tuple[int, int, int, int]:
    kh, kw = weight.shape[-2:]
    return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)  # conv2d(padding="same")


def zero_padded_norm(weight, H, W, tol, max_iter, pads=None) -> torch.Tensor:
    """||T|| of the zero-padded conv (padding ``pads`` = (left, right, top,
    bottom), 'same' by default) on H x W inputs: ||T y|| for the unit Ritz
    vector y of _lanczos_top_vector, so its gradient is u y^T (exact to first
    order; y is held fixed). NaN for a kernel with NaN or Inf."""
    pads = _same_padding(weight) if pads is None else tuple(pads)
    w = _autograd.first_order_only(weight, "convspectra.spectral_norm(padding='zeros', method='exact')")
    # the search and ||T y|| on the kernel scaled to a largest tap of 1 (the
    # scale held fixed; the top vector does not depend on it)
    largest = _precision.tap_scale(w)
    scaled = w / largest
    y = _lanczos_top_vector(scaled.detach(), H, W, list(pads), tol, max_iter)
    return largest * torch.linalg.vector_norm(torch.nn.functional.conv2d(torch.nn.functional.pad(y, pads), scaled))


# An op of its own: the search is data-dependent (restarts, convergence), so
# torch.compile keeps it out of the graph without breaking the graph, and the
# differentiable ||T y|| above is traced around it.
@torch.library.custom_op("convspectra::lanczos_top_vector", mutates_args=())
def _lanczos_top_vector(weight: torch.Tensor, H: int, W: int, pads: list[int], tol: float,
                        max_iter: int) -> torch.Tensor:
    """The top right singular vector y (1, c_in, H, W), unit, of the zero-padded
    conv with padding ``pads`` = (left, right, top, bottom): thick-restart
    Lanczos on A = T^T T (docs/math.md §11.3) with full reorthogonalisation,
    warm-started from the top circular mode. The basis V grows to LANCZOS_BASIS
    vectors with their products A V stored, then restarts from its top
    LANCZOS_KEEP Ritz vectors (a cluster of near-equal top singular values stays
    in the basis, where restarting from one vector would lose it); at most
    ``max_iter`` applications of A, converged when the top Ritz pair's residual
    ||A u - theta u|| (its part outside the basis) <= tol theta, which bounds
    |lambda - theta| for an eigenvalue lambda of A. NaN for a kernel with NaN or
    Inf. zero_padded_norm calls it on the kernel scaled to a largest tap of 1."""
    left, top = pads[0], pads[2]
    pads = tuple(pads)

    def T(x):
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), weight)

    def Tt(y):  # adjoint: conv_transpose of the valid conv, then crop the padding
        return torch.nn.functional.conv_transpose2d(y, weight)[..., top : top + H, left : left + W]

    if not bool(torch.isfinite(weight).all()):  # NaN like every other function, not an eigh error
        return weight.new_full((1, weight.shape[1], H, W), float("nan"))
    with _precision.full_float32():
        y = _circular_top_mode(weight, H, W)
        shape, n = y.shape, y.numel()
        size = min(LANCZOS_BASIS, n)
        V = y.new_zeros(size, n)  # orthonormal rows
        AV = y.new_zeros(size, n)  # A applied to each row of V
        G = torch.zeros(size, size, dtype=torch.float64, device=y.device)  # V A V^T
        v = y.flatten() / torch.linalg.vector_norm(y)
        k, used, converged = 0, 0, False
        while True:
            V[k], AV[k] = v, Tt(T(v.view(shape))).flatten()
            used, k = used + 1, k + 1
            G[k - 1, :k] = G[:k, k - 1] = (V[:k] @ AV[k - 1]).double()
            theta, S = torch.linalg.eigh(G[:k, :k])  # ascending
            s_top = S[:, -1].to(y.dtype)
            u = s_top @ V[:k]
            r = s_top @ AV[:k] - theta[-1].to(y.dtype) * u
            # The residual's part outside the basis, the next direction (orthogonalised
            # twice when once cancelled much: "twice is enough"). Its norm is the
            # residual of the Ritz pair (beta |s_last| of the Lanczos recurrence); the
            # part inside the basis is only the rounding of the products.
            for _ in range(2):
                before = torch.linalg.vector_norm(r)
                r = r - (V[:k] @ r) @ V[:k]
                beta = torch.linalg.vector_norm(r)
                if bool(beta >= REORTHOGONALISE_AGAIN * before):
                    break
            scale = theta[-1].abs()
            # |lambda - theta| <= beta; sigma = sqrt(lambda) has half the relative error;
            # beta at the rounding level of the products, or the whole space: theta is exact
            converged = bool(beta <= tol * scale) or bool(beta <= torch.finfo(y.dtype).eps * scale) or k == n
            if converged or used >= max_iter:
                break
            if k == size:  # thick restart: the top Ritz vectors and their products, made orthonormal again
                keep = min(LANCZOS_KEEP, size - 1)
                rotation = S[:, -keep:].to(y.dtype).T
                Q, R = torch.linalg.qr((rotation @ V[:k]).T)
                V[:keep] = Q.T
                AV[:keep] = torch.linalg.solve_triangular(R.T, rotation @ AV[:k], upper=False)
                G.zero_()
                G[:keep, :keep] = (V[:keep] @ AV[:keep].T).double()
                G[:keep, :keep] = (G[:keep, :keep] + G[:keep, :keep].T) / 2
                k = keep
                r = r - (V[:k] @ r) @ V[:k]
                beta = torch.linalg.vector_norm(r)
            v = r / beta
        y = (u / torch.linalg.vector_norm(u)).view(shape)
    if not converged:
        warnings.warn(f"spectral_norm(padding='zeros', method='exact'): Lanczos reached max_iter={max_iter} "
                      f"before tol={tol:g}; the result is a lower bound of the norm", RuntimeWarning, stacklevel=2)
    return y


@_lanczos_top_vector.register_fake
def _(weight, H, W, pads, tol, max_iter):
    return weight.new_empty(1, weight.shape[1], H, W)


@_lanczos_top_vector.register_vmap
def _(info, in_dims, weight, H, W, pads, tol, max_iter):
    # one search per kernel of the batch
    weight = weight.movedim(in_dims[0], 0) if in_dims[0] is not None else weight.expand(info.batch_size, *weight.shape)
    return torch.stack([_lanczos_top_vector(w, H, W, pads, tol, max_iter) for w in weight]), 0


# Lanczos basis size before a restart (memory: twice this many input-sized
# vectors, the basis and its products), and the Ritz vectors a restart keeps.
LANCZOS_BASIS = 24
LANCZOS_KEEP = 8
# A reorthogonalised vector shorter than this fraction of itself before is reorthogonalised again.
REORTHOGONALISE_AGAIN = 0.5 ** 0.5


def _circular_top_mode(weight, H, W) -> torch.Tensor:
    """A real input close to the top right singular vector of the zero-padded
    layer: the top circular mode at the maximising frequency, under a sine
    envelope that vanishes outside the image (the fundamental mode of the
    zero-padded boundary)."""
    c_in = weight.shape[1]
    w1, w2 = top_frequency(weight, H, W)
    with torch.no_grad():
        _, _, Vh = linalg.svd(symbol_at(weight, w1, w2))
        # top right singular vector of F(w); conjugated in memory: a lazy conj
        # view loses its sign inside a compiled graph's op call (torch 2.13)
        r = Vh[0].conj_physical()
        i = torch.arange(H, device=weight.device, dtype=torch.float64)
        j = torch.arange(W, device=weight.device, dtype=torch.float64)
        # conv2d correlates: the mode exp(-i w.n) r of F(w) for a convolution
        phase = torch.exp(-1j * (w1 * i[:, None] + w2 * j[None, :]))
        env = torch.sin(torch.pi * (i + 1) / (H + 1))[:, None] * torch.sin(torch.pi * (j + 1) / (W + 1))[None, :]
        mode = (r.to(torch.complex128)[:, None, None] * (phase * env)).real
        # never exactly orthogonal to the top vector; a private generator leaves the global RNG alone
        noise = torch.randn(mode.shape, dtype=mode.dtype, generator=torch.Generator().manual_seed(0))
        mode = mode + 1e-3 * noise.to(mode.device)
    return mode.to(weight.dtype).reshape(1, c_in, H, W)

