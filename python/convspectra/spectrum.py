"""Spectra of conv layers: the symbol, exact circular singular values,
per-frequency SVD and the spectral norm (MATH.md 2-3).

The singular-value path never materialises the whole symbol: it evaluates the
symbol directly from the kernel taps on chunks of frequency rows (a small
matmul with DFT phases, cheaper than an FFT for k x k kernels), only on the
half grid ``v = 0 .. W//2`` (a real kernel has ``F(-w) = conj F(w)``), solves
each chunk with the fused batched SVD and counts each value with its
multiplicity. Its backward reuses the vectors of the forward when they fit a
budget and recomputes them chunk by chunk otherwise, so memory stays bounded
in training too.
"""

from __future__ import annotations

import math

import torch

from . import _checks, _ops
from .reference import polyphase

__all__ = ["symbol", "singular_values", "svd", "spectral_norm"]

# Complex elements of one chunk of the symbol (32 MiB in complex64).
CHUNK_ELEMENTS = 1 << 22
# Singular vectors (U and Vh, complex elements) kept from the forward for the
# backward; above this the backward recomputes them chunk by chunk instead.
KEEP_VECTORS_ELEMENTS = 1 << 25


def symbol(weight: torch.Tensor, input_size) -> torch.Tensor:
    """The multi-channel symbol on the full DFT grid, complex ``(H, W, c_out, c_in)``:
    ``torch.fft.fft2(weight, s=(H, W)).permute(2, 3, 0, 1)`` (MATH.md 2)."""
    _checks.check_weight(weight)
    H, W = _checks.input_size_pair(input_size, weight)
    return torch.fft.fft2(weight, s=(H, W)).permute(2, 3, 0, 1)


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _dft_phases(freqs: torch.Tensor, n: int, taps: int, dtype: torch.dtype) -> torch.Tensor:
    """exp(-2 pi i f t / n) for f in freqs (rows) and t < taps (columns).
    The product f t is reduced mod n in integers first, for exact angles."""
    t = torch.arange(taps, device=freqs.device)
    k = (freqs.unsqueeze(-1) * t) % n
    angle = k.to(torch.float64) * (-2.0 * math.pi / n)
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


def _half_grid_columns(weight: torch.Tensor, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The DFT along the kernel's width for v = 0..W//2, laid out
    (kh, W//2+1, c_out, c_in) so that each chunk of rows comes out of one
    matmul already in the solver's layout; and the phases Ev (W//2+1, kw)."""
    cdt = _complex_dtype(weight.dtype)
    Ev = _dft_phases(torch.arange(W // 2 + 1, device=weight.device), W, weight.shape[-1], cdt)
    return (weight.to(cdt) @ Ev.T).permute(2, 3, 0, 1).contiguous(), Ev


def _symbol_rows(cols: torch.Tensor, Eu: torch.Tensor) -> torch.Tensor:
    """Symbol at the frequency rows of Eu (rows, kh) on the half grid:
    (rows, W//2+1, c_out, c_in), contiguous."""
    return (Eu @ cols.flatten(1)).view(Eu.shape[0], *cols.shape[1:])


def _row_chunks(H: int, per_row: int):
    rows = max(1, CHUNK_ELEMENTS // max(1, per_row))
    return [(u0, min(H, u0 + rows)) for u0 in range(0, H, rows)]


class _HalfGridSpectrum(torch.autograd.Function):
    """Singular values of the symbol on the half grid, (H, W//2+1, r).

    When the weight needs a gradient, the forward solves for the vectors too
    and keeps them if they fit in KEEP_VECTORS_ELEMENTS (the backward is then
    two batched products per chunk); beyond that it keeps nothing and the
    backward recomputes each chunk, so memory stays bounded for any input size.
    """

    @staticmethod
    def forward(ctx, weight, H, W):
        cols, Ev = _half_grid_columns(weight, W)
        chunks = _row_chunks(H, cols[0].numel())
        r = min(cols.shape[-2:])
        keep = ctx.needs_input_grad[0] and H * cols.shape[1] * r * sum(cols.shape[-2:]) <= KEEP_VECTORS_ELEMENTS
        values, Us, Vhs = [], [], []
        for u0, u1 in chunks:
            A = _symbol_rows(cols, _dft_phases(torch.arange(u0, u1, device=weight.device), H, cols.shape[0], cols.dtype))
            if keep:
                U, S, Vh = _ops.svd(A)
                Us.append(U)
                Vhs.append(Vh)
            else:
                S = _ops.svdvals(A)
            values.append(S)
        ctx.H, ctx.chunks, ctx.kept = H, chunks, keep
        ctx.save_for_backward(weight, cols, Ev, *Us, *Vhs)
        return torch.cat(values, 0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        weight, cols, Ev, *vectors = ctx.saved_tensors
        n = len(ctx.chunks)
        grad_cols = torch.zeros_like(cols).flatten(1)  # (kh, wh*c_out*c_in)
        for i, (u0, u1) in enumerate(ctx.chunks):
            Eu = _dft_phases(torch.arange(u0, u1, device=weight.device), ctx.H, cols.shape[0], cols.dtype)
            if ctx.kept:
                U, Vh = vectors[i], vectors[n + i]
            else:
                U, _, Vh = _ops.svd(_symbol_rows(cols, Eu))
            # d sigma = Re <U diag(g) V^H, dA>: the gradient wrt the chunk.
            gA = _ops._scale_columns(U, grad[u0:u1]) @ Vh  # (rows, wh, c_out, c_in)
            grad_cols += Eu.mH @ gA.flatten(1)  # adjoint of A = Eu @ cols
        grad_cols = grad_cols.view(cols.shape).permute(2, 3, 0, 1)  # (c_out, c_in, kh, wh)
        grad_weight = (grad_cols @ Ev.conj()).real  # adjoint of cols = weight @ Ev^T
        return grad_weight.to(weight.dtype), None, None


def _multiplicity_index(W: int, device) -> torch.Tensor:
    """Half-grid column of every full-grid column, up to conjugation: columns
    0 < v < W/2 stand for v and W - v; v = 0 and v = W/2 only for themselves."""
    return torch.cat([torch.arange(W // 2 + 1, device=device), torch.arange(1, (W - 1) // 2 + 1, device=device)])


def singular_values(weight: torch.Tensor, input_size, padding: str = "circular", stride: int = 1) -> torch.Tensor:
    """Exact singular values of the circularly padded conv layer (Sedghi et al.
    2019), 1-D, sorted descending, ``H*W*min(c_in, c_out)`` values.

    ``stride=s`` (s dividing H and W) analyses the strided layer exactly through
    the polyphase split (MATH.md 3): ``(H/s)*(W/s)*min(c_out, c_in*s*s)`` values.
    Differentiable with respect to ``weight``; memory stays bounded for large
    inputs (chunked over frequencies, forward and backward).
    """
    _checks.check_weight(weight)
    H, W = _checks.input_size_pair(input_size, weight)
    if _checks.check_padding(padding) == "zeros":
        raise NotImplementedError("singular_values: padding='zeros' (the spectral-density approximation) "
                                  "is not implemented in this version; use padding='circular'")
    s = _checks.check_stride(stride, H, W)
    weight = polyphase(weight, s)
    H, W = H // s, W // s
    half = _HalfGridSpectrum.apply(weight, H, W)  # (H, W//2+1, r)
    full = half.index_select(1, _multiplicity_index(W, half.device))  # (H, W, r)
    return full.flatten().sort(descending=True).values


def svd(weight: torch.Tensor, input_size):
    """Per-frequency reduced SVD of the symbol on the full grid:
    U ``(H, W, c_out, r)``, S ``(H, W, r)``, Vh ``(H, W, r, c_in)``, with
    ``U diag(S) Vh == symbol(weight, input_size)``. Differentiable."""
    return _ops.svd(symbol(weight, input_size))


def spectral_norm(weight: torch.Tensor, input_size=None, padding: str = "circular", method: str = "exact"):
    """Spectral norm of the conv layer as a differentiable 0-dim tensor.

    ``method="exact"`` with ``padding="circular"``: the largest singular value
    over all frequencies (MATH.md 3). The search runs chunked without autograd;
    the gradient flows through the maximising frequency only (a subgradient when
    the maximum is attained at several frequencies).
    """
    _checks.check_weight(weight)
    padding = _checks.check_padding(padding)
    if method != "exact":
        raise NotImplementedError(f"spectral_norm: method={method!r} is not implemented in this version; "
                                  "use method='exact'")
    if padding != "circular":
        raise NotImplementedError("spectral_norm: padding='zeros' is not implemented in this version")
    if input_size is None:
        raise ValueError("input_size is required for method='exact'")
    H, W = _checks.input_size_pair(input_size, weight)
    with torch.no_grad():
        top = _HalfGridSpectrum.apply(weight, H, W)[..., 0]  # (H, W//2+1)
        flat = top.flatten().argmax()
    u, v = flat // top.shape[1], flat % top.shape[1]
    cdt = _complex_dtype(weight.dtype)
    kh, kw = weight.shape[-2:]
    Eu = _dft_phases(u.reshape(1), H, kh, cdt)  # (1, kh)
    Ev = _dft_phases(v.reshape(1), W, kw, cdt)  # (1, kw)
    F_max = torch.einsum("s,t,oist->oi", Eu[0], Ev[0], weight.to(cdt))
    return _svdvals_for_grad(F_max)[0]


def _svdvals_for_grad(A: torch.Tensor) -> torch.Tensor:
    if A.requires_grad and torch.is_grad_enabled():
        return _ops.svd(A)[1]
    return _ops.svdvals(A)
