"""Spectra of conv layers: the symbol, exact circular singular values,
per-frequency SVD and the spectral norm (MATH.md 2-3).

The singular-value path never materialises the whole symbol: it evaluates the
symbol directly from the kernel taps on chunks of frequency rows (a small
matmul with DFT phases, cheaper than an FFT for k x k kernels), only on the
half grid ``v = 0 .. W//2`` (a real kernel has ``F(-w) = conj F(w)``), solves
each chunk with the fused batched SVD and counts each value with its
multiplicity. Its backward recomputes chunk by chunk, so memory stays bounded
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
    """The DFT along the kernel's width for v = 0..W//2: (c_out, c_in, kh, W//2+1),
    and the phases Ev (W//2+1, kw) that produced it."""
    cdt = _complex_dtype(weight.dtype)
    Ev = _dft_phases(torch.arange(W // 2 + 1, device=weight.device), W, weight.shape[-1], cdt)
    return weight.to(cdt) @ Ev.T, Ev


def _symbol_rows(cols: torch.Tensor, Eu: torch.Tensor) -> torch.Tensor:
    """Symbol at the frequency rows of Eu (rows, kh) on the half grid:
    (rows, W//2+1, c_out, c_in), contiguous."""
    c_out, c_in, kh, wh = cols.shape
    flat = cols.permute(2, 0, 1, 3).reshape(kh, -1)  # (kh, c_out*c_in*wh)
    out = (Eu @ flat).reshape(-1, c_out, c_in, wh)
    return out.permute(0, 3, 1, 2).contiguous()


def _row_chunks(H: int, per_row: int):
    rows = max(1, CHUNK_ELEMENTS // max(1, per_row))
    return [(u0, min(H, u0 + rows)) for u0 in range(0, H, rows)]


class _HalfGridSpectrum(torch.autograd.Function):
    """Singular values of the symbol on the half grid, (H, W//2+1, r), with a
    backward that recomputes each chunk (bounded memory)."""

    @staticmethod
    def forward(weight, H, W):
        cols, _ = _half_grid_columns(weight, W)
        cdt = cols.dtype
        per_row = cols.shape[0] * cols.shape[1] * cols.shape[3]
        out = []
        for u0, u1 in _row_chunks(H, per_row):
            Eu = _dft_phases(torch.arange(u0, u1, device=weight.device), H, weight.shape[-2], cdt)
            out.append(_ops.svdvals(_symbol_rows(cols, Eu)))
        return torch.cat(out, 0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, H, W = inputs
        ctx.save_for_backward(weight)
        ctx.H, ctx.W = H, W

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        H, W = ctx.H, ctx.W
        cols, Ev = _half_grid_columns(weight, W)
        c_out, c_in, kh, wh = cols.shape
        grad_cols = torch.zeros(kh, c_out * c_in * wh, dtype=cols.dtype, device=cols.device)
        for u0, u1 in _row_chunks(H, c_out * c_in * wh):
            Eu = _dft_phases(torch.arange(u0, u1, device=weight.device), H, kh, cols.dtype)
            U, _, Vh = _ops.svd(_symbol_rows(cols, Eu))
            # d sigma = Re <U diag(g) V^H, d A>: the gradient wrt the chunk.
            gA = _ops._scale_columns(U, grad[u0:u1]) @ Vh  # (rows, wh, c_out, c_in)
            gA = gA.permute(0, 2, 3, 1).reshape(u1 - u0, -1)
            grad_cols += Eu.mH @ gA  # adjoint of A = Eu @ cols
        grad_cols = grad_cols.reshape(kh, c_out, c_in, wh).permute(1, 2, 0, 3)
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
