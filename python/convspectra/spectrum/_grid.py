"""The per-frequency machinery behind every spectrum: the symbol of a kernel
evaluated directly from its taps on blocks of a frequency grid, solved block by
block with the fused batched SVD (docs/math.md §2, §3).

The symbol is never materialised whole: each block is a small matmul with DFT
phases (cheaper than an FFT for k x k kernels), only the half grid
``v = 0 .. W//2`` is solved for a real kernel (``F(-w) = conj F(w)``), and each
value is counted with its multiplicity. The backward reuses the vectors of the
forward when they fit a budget and recomputes them block by block otherwise, so
memory stays bounded in training too.
"""

from __future__ import annotations

import math

import torch

from .. import _autograd, linalg
from .._gradients import scale_columns
from .._precision import in_full_float32

# Complex elements of one chunk of the symbol (32 MiB in complex64).
CHUNK_ELEMENTS = 1 << 22


# Singular vectors (U and Vh, complex elements) kept from the forward for the
# backward; above this the backward recomputes them chunk by chunk instead.
KEEP_VECTORS_ELEMENTS = 1 << 25


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def phases(angles: torch.Tensor, taps: int, dtype: torch.dtype) -> torch.Tensor:
    """exp(-i a t) for the angles a (rows, float64) and taps t < taps (columns)."""
    at = angles.unsqueeze(-1) * torch.arange(taps, device=angles.device, dtype=torch.float64)
    return torch.polar(torch.ones_like(at), -at).to(dtype)


def dft_angles(n: int, device, count: int | None = None) -> torch.Tensor:
    """The DFT frequencies 2 pi u / n for u < count (default n)."""
    return torch.arange(n if count is None else count, device=device, dtype=torch.float64) * (2 * math.pi / n)


def _grid_columns(weight: torch.Tensor, col_angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform along the kernel's width at col_angles, laid out
    (kh, n_cols, c_out, c_in) so that each chunk of rows comes out of one
    matmul already in the solver's layout; and its phases Ev (n_cols, kw)."""
    Ev = phases(col_angles, weight.shape[-1], complex_dtype(weight.dtype))
    return (weight.to(Ev.dtype) @ Ev.T).permute(2, 3, 0, 1).contiguous(), Ev


def _symbol_rows(cols: torch.Tensor, Eu: torch.Tensor) -> torch.Tensor:
    """The symbol at the rows of Eu (rows, kh) and the columns of cols:
    (rows, n_cols, c_out, c_in), contiguous."""
    return (Eu @ cols.flatten(1)).view(Eu.shape[0], *cols.shape[1:])


def row_chunks(n_rows: int, per_row: int):
    rows = max(1, CHUNK_ELEMENTS // max(1, per_row))
    return [(u0, min(n_rows, u0 + rows)) for u0 in range(0, n_rows, rows)]


def column_blocks(n_cols: int, weight_shape) -> list[tuple[int, int]]:
    """Blocks of columns whose transform (kh, v1 - v0, c_out, c_in) holds at
    most CHUNK_ELEMENTS (at least one column): the transform of every column
    at once is kh * n_cols * c_out * c_in elements (2.8 GB for a
    1024 x 1024 x 3 x 3 kernel at 224)."""
    c_out, c_in, kh = weight_shape[:3]
    cols = max(1, min(n_cols, CHUNK_ELEMENTS // max(1, kh * c_out * c_in)))
    return [(v0, min(n_cols, v0 + cols)) for v0 in range(0, n_cols, cols)]


def grid_symbols(weight: torch.Tensor, row_angles: torch.Tensor, col_angles: torch.Tensor, *, symbols: bool = True):
    """Yields (u0, u1, v0, v1, F, Eu, Ev) for blocks of the symbol on the grid
    row_angles x col_angles, column block by column block: F of shape
    (u1 - u0, v1 - v0, c_out, c_in), at most CHUNK_ELEMENTS (or one
    frequency), Eu (u1 - u0, kh) and Ev (v1 - v0, kw) the phases of its rows
    and columns. With ``symbols=False``, F is None and nothing is transformed."""
    kh = weight.shape[2]
    cdt = complex_dtype(weight.dtype)
    for v0, v1 in column_blocks(col_angles.numel(), weight.shape):
        if symbols:
            cols, Ev = _grid_columns(weight, col_angles[v0:v1])
        else:
            cols, Ev = None, phases(col_angles[v0:v1], weight.shape[3], cdt)
        for u0, u1 in row_chunks(row_angles.numel(), (v1 - v0) * weight.shape[0] * weight.shape[1]):
            Eu = phases(row_angles[u0:u1], kh, cdt)
            yield u0, u1, v0, v1, (_symbol_rows(cols, Eu) if symbols else None), Eu, Ev


def column_adjoint(grad_cols: torch.Tensor, Ev: torch.Tensor, weight_shape) -> torch.Tensor:
    """The gradient wrt the real kernel of one column block's transform
    cols = weight @ Ev^T, from its gradient grad_cols (kh, (v1 - v0) * c_out * c_in)."""
    kh = grad_cols.shape[0]
    grad = torch.einsum("svx,vt->xst", grad_cols.view(kh, Ev.shape[0], -1), Ev.conj()).real
    return grad.reshape(*weight_shape[:2], kh, -1)


class _GridSpectrum(torch.autograd.Function):
    """Singular values of the symbol on the grid row_angles x col_angles:
    (n_rows, n_cols, r), solved block by block (grid_symbols) with the fused
    batched SVD, into one preallocated output.

    When the weight needs a gradient, the forward solves for the vectors too
    and keeps them if they fit in KEEP_VECTORS_ELEMENTS (the backward is then
    two batched products per block); beyond that it keeps nothing and the
    backward recomputes each block, so memory stays bounded for any input size.
    The outputs are the values, then the kept U and Vh of each block (none when
    nothing is kept; not differentiable). A recorded backward (create_graph,
    torch.func) recomputes every block through the differentiable SVD, and its
    graph holds all of them. vmap runs the same code on batched tensors.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(weight, row_angles, col_angles, want_grad):
        c_out, c_in = weight.shape[:2]
        n_rows, n_cols, r = row_angles.numel(), col_angles.numel(), min(c_out, c_in)
        # (needs_input_grad ignores torch.no_grad(): the caller says whether a backward can come)
        keep = want_grad and n_rows * n_cols * r * (c_out + c_in) <= KEEP_VECTORS_ELEMENTS
        values = weight.new_empty(n_rows, n_cols, r)
        Us, Vhs = [], []
        for u0, u1, v0, v1, A, _, _ in grid_symbols(weight, row_angles, col_angles):
            if keep:
                U, S, Vh = linalg.svd(A)
                Us.append(U)
                Vhs.append(Vh)
            else:
                S = linalg.svdvals(A)
            values[u0:u1, v0:v1] = S
        return (values, *Us, *Vhs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, row_angles, col_angles, _ = inputs
        vectors = output[1:]
        ctx.mark_non_differentiable(*vectors)
        ctx.kept, ctx.n_vectors = bool(vectors), len(vectors)
        ctx.save_for_backward(weight, row_angles, col_angles, *vectors)
        ctx.save_for_forward(weight, row_angles, col_angles)

    @staticmethod
    @in_full_float32
    def backward(ctx, grad, *_):
        weight, row_angles, col_angles, *vectors = ctx.saved_tensors
        reuse = ctx.kept and not _autograd.differentiating_backward()
        n = len(vectors) // 2
        grad_weight = grad_cols = None  # grad_cols: (kh, (v1 - v0) * c_out * c_in) of the current column block
        blocks = grid_symbols(weight, row_angles, col_angles, symbols=not reuse)
        for i, (u0, u1, v0, v1, A, Eu, Ev) in enumerate(blocks):
            U, Vh = (vectors[i], vectors[n + i]) if reuse else linalg.svd(A)[::2]
            # d sigma = Re <U diag(g) V^H, dA>: the gradient wrt the block
            gA = scale_columns(U, grad[u0:u1, v0:v1]) @ Vh  # (rows, cols, c_out, c_in)
            part = Eu.mH @ gA.flatten(1)  # adjoint of A = Eu @ cols
            grad_cols = part if grad_cols is None else grad_cols + part
            if u1 == row_angles.numel():  # the column block is complete
                part = column_adjoint(grad_cols, Ev, weight.shape)
                grad_weight = part if grad_weight is None else grad_weight + part
                grad_cols = None
        return grad_weight.to(weight.dtype), None, None, None


class _GridSpectrumJvp(_GridSpectrum):
    """_GridSpectrum with forward-mode AD, for eager mode (Dynamo cannot trace
    a custom jvp): d sigma_j = Re u_j^H dF v_j, the symbol dF of the tangent
    kernel, the vectors recomputed block by block."""

    @staticmethod
    @in_full_float32
    def jvp(ctx, weight_t, *_):
        _autograd.check_forward_level("convspectra.singular_values")
        weight, row_angles, col_angles = ctx.saved_tensors
        # new_empty of the tangent: batched with it under torch.func.jacfwd / hessian
        out = weight_t.new_empty(row_angles.numel(), col_angles.numel(), min(weight.shape[:2]))
        tangents = grid_symbols(weight_t, row_angles, col_angles)
        for (u0, u1, v0, v1, A, _, _), (*_, dA, _, _) in zip(grid_symbols(weight, row_angles, col_angles), tangents):
            U, _, Vh = linalg.svd(A)
            out[u0:u1, v0:v1] = (U.mH @ dA @ Vh.mH).diagonal(dim1=-2, dim2=-1).real
        return (out, *[None] * ctx.n_vectors)


def grid_spectrum(weight, row_angles, col_angles, want_grad: bool) -> torch.Tensor:
    """The values of _GridSpectrum (with forward-mode AD outside torch.compile)."""
    function = _GridSpectrum if torch.compiler.is_compiling() else _GridSpectrumJvp
    return function.apply(weight, row_angles, col_angles, want_grad)[0]


def symbol_at(weight, w1, w2) -> torch.Tensor:
    """F at the angles (w1, w2) (0-dim tensors), differentiable."""
    cdt = complex_dtype(weight.dtype)
    kh, kw = weight.shape[-2:]
    return torch.einsum("s,t,oist->oi", phases(w1.reshape(1), kh, cdt)[0], phases(w2.reshape(1), kw, cdt)[0],
                        weight.to(cdt))


def wants_grad(weight: torch.Tensor) -> bool:
    return weight.requires_grad and torch.is_grad_enabled()


def _multiplicity_index(W: int, device) -> torch.Tensor:
    """Half-grid column of every full-grid column, up to conjugation: columns
    0 < v < W/2 stand for v and W - v; v = 0 and v = W/2 only for themselves."""
    return torch.cat([torch.arange(W // 2 + 1, device=device), torch.arange(1, (W - 1) // 2 + 1, device=device)])


def circular_half(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The circular singular values on the half grid, (H, W//2 + 1, r), each
    frequency's values descending."""
    return grid_spectrum(weight, dft_angles(H, weight.device), dft_angles(W, weight.device, W // 2 + 1),
                          wants_grad(weight))


def with_multiplicity(half: torch.Tensor, W: int) -> torch.Tensor:
    """Half-grid values (H, W//2 + 1, ...) counted with their multiplicity, flattened."""
    return half.index_select(1, _multiplicity_index(W, half.device)).flatten()


def circular_values(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """All H*W*r circular singular values, unsorted, each with its multiplicity."""
    return with_multiplicity(circular_half(weight, H, W), W)



def polyphase(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """The stride-1 kernel on the (H/s) x (W/s) grid of a stride-s conv
    (docs/math.md §3.2): input channel (c, p, q) of the result holds the taps
    K[:, c, p::s, q::s] of phase (p, q), zero where the kernel ends.
    Differentiable, vmap included."""
    s = stride
    if s == 1:
        return weight
    c_out, c_in, kh, kw = weight.shape
    out = weight.new_zeros(c_out, c_in, s, s, -(-kh // s), -(-kw // s))
    for p in range(min(s, kh)):
        for q in range(min(s, kw)):
            taps = weight[:, :, p::s, q::s]
            out[:, :, p, q, : taps.shape[2], : taps.shape[3]] = taps
    return out.reshape(c_out, c_in * s * s, *out.shape[-2:])
