"""Plain-PyTorch reference implementations: the oracle of the tests and the
fallback when the compiled library is unavailable.

They are written the way published code computes these quantities
(``torch.linalg.svdvals`` of ``fft2``), favouring clarity over speed and
memory. Conventions (docs/math.md §1): a weight is a real ``(c_out, c_in, kh, kw)``
conv2d kernel; the layer is ``torch.nn.functional.conv2d`` (a
cross-correlation) on an ``H x W`` input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks

__all__ = [
    "symbol",
    "singular_values",
    "conv_svd",
    "spectral_norm",
    "clip_singular_values",
    "cayley",
    "cayley_conv2d",
    "bjorck",
    "bcop_kernel",
    "bcop_conv2d",
    "lot_conv2d",
    "soc_conv2d",
    "aol_conv2d",
    "cpl_conv2d",
    "sll_conv2d",
    "gram_bound",
    "svdvals",
    "polyphase",
    "conv",
    "dense_operator",
]


def symbol(weight: torch.Tensor, input_size) -> torch.Tensor:
    """The multi-channel symbol on the full DFT grid.

    ``F[u, v] = sum_{s,t} weight[:, :, s, t] exp(-2 pi i (u s / H + v t / W))``,
    returned as a complex ``(H, W, c_out, c_in)`` tensor; equal to
    ``torch.fft.fft2(weight, s=(H, W)).permute(2, 3, 0, 1)``.
    """
    _checks.check_weight(weight)
    H, W = _checks.input_size_pair(input_size, weight)
    return torch.fft.fft2(weight, s=(H, W)).permute(2, 3, 0, 1)


def polyphase(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """The stride-1 kernel equivalent to a stride-``s`` conv (docs/math.md §3.2).

    Splitting the input into its ``s*s`` phases turns a stride-``s`` conv into
    a stride-1 conv from ``c_in*s*s`` channels on the ``H/s x W/s`` grid, with
    ``K'[o, (c, p, q), a, b] = K[o, c, s*a + p, s*b + q]`` (zero beyond the
    kernel). For circular padding the two operators differ by a permutation
    of the input, so they have the same singular values.
    """
    s = stride
    if s == 1:
        return weight
    c_out, c_in, kh, kw = weight.shape
    kh2, kw2 = -(-kh // s), -(-kw // s)
    padded = weight.new_zeros(c_out, c_in, kh2 * s, kw2 * s)
    padded[:, :, :kh, :kw] = weight
    # (o, c, a, p, b, q) -> (o, c, p, q, a, b)
    out = padded.reshape(c_out, c_in, kh2, s, kw2, s).permute(0, 1, 3, 5, 2, 4)
    return out.reshape(c_out, c_in * s * s, kh2, kw2)


def singular_values(weight: torch.Tensor, input_size, padding: str = "circular", stride: int = 1) -> torch.Tensor:
    """Exact singular values of the circular conv layer (Sedghi et al. 2019),
    sorted descending: ``H*W*min(c_in, c_out)`` values (stride ``s``: those of
    the polyphase kernel on the ``H/s x W/s`` grid)."""
    _checks.check_weight(weight)
    H, W = _checks.input_size_pair(input_size, weight)
    if _checks.check_padding(padding) != "circular":
        raise NotImplementedError("reference.singular_values: only padding='circular' is implemented")
    s = _checks.check_stride(stride, H, W)
    weight = polyphase(weight, s)
    sym = torch.fft.fft2(weight, s=(H // s, W // s)).permute(2, 3, 0, 1)
    return torch.linalg.svdvals(sym).flatten().sort(descending=True).values


def conv_svd(weight: torch.Tensor, input_size):
    """Per-frequency reduced SVD of the symbol: U (H,W,c_out,r), S (H,W,r), Vh (H,W,r,c_in)."""
    return torch.linalg.svd(symbol(weight, input_size), full_matrices=False)


def spectral_norm(weight: torch.Tensor, input_size, padding: str = "circular", method: str = "exact") -> torch.Tensor:
    """Exact spectral norm of the circular layer: the largest per-frequency singular value."""
    if _checks.check_padding(padding) != "circular" or method != "exact":
        raise NotImplementedError("reference.spectral_norm: only padding='circular', method='exact'")
    return torch.linalg.svdvals(symbol(weight, input_size)).max()


def clip_singular_values(weight: torch.Tensor, input_size, max_value: float = 1.0) -> torch.Tensor:
    """Sedghi et al.'s projection: clamp every per-frequency singular value of
    the full-grid symbol at ``max_value``, invert the FFT, crop to the kernel."""
    kh, kw = weight.shape[-2:]
    U, S, Vh = conv_svd(weight, input_size)
    projected = U @ torch.diag_embed(S.clamp(max=max_value).to(U.dtype)) @ Vh  # (H, W, c_out, c_in)
    full = torch.fft.ifft2(projected.permute(2, 3, 0, 1)).real
    return full[:, :, :kh, :kw].contiguous()


def gram_bound(A: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Upper bound of ||A||_2 per matrix of a batch (..., m, n) by Gram
    iteration (Delattre et al. 2023): ||A||_2^(2^t) <= ||G_t||_F with
    G_{t+1} = G_t^H G_t, each G rescaled to unit Frobenius norm and the scale
    carried in log space. Differentiable."""
    if A.shape[-2] < A.shape[-1]:
        A = A.mH  # square the smaller Gram matrix
    tiny = torch.finfo(A.real.dtype).tiny
    # the bound is scale-equivariant: start from entries <= 1 so that even the
    # first Frobenius norm cannot overflow
    amax = A.abs().amax(dim=(-2, -1)).clamp_min(tiny)
    G = A / amax[..., None, None]
    log_scale = torch.zeros(A.shape[:-2], dtype=torch.float64, device=A.device)
    for _ in range(steps):
        f = torch.linalg.matrix_norm(G).clamp_min(tiny)
        G = G / f[..., None, None]
        log_scale = 2 * (log_scale + f.log().double())
        G = G.mH @ G
    log_bound = (log_scale + torch.linalg.matrix_norm(G).log().double()) / 2**steps
    return log_bound.exp().to(A.real.dtype) * amax


def cayley(W: torch.Tensor) -> torch.Tensor:
    """Batched Cayley map (docs/math.md §5.1), written as published code does it:
    ``torch.inverse`` per matrix, then products.
    Square: ``A = W - W^H``, ``Q = (I + A)^{-1} (I - A)``, unitary.
    Tall (m > n): ``W = [U; V]``, ``A = U - U^H + V^H V``,
    ``Q = [(I + A)^{-1} (I - A); -2 V (I + A)^{-1}]``, orthonormal columns.
    Wide (m < n): the same on ``W^H``, transposed back; orthonormal rows."""
    m, n = W.shape[-2:]
    if m < n:
        return cayley(W.mH).mH
    U, V = W[..., :n, :], W[..., n:, :]
    A = U - U.mH + V.mH @ V
    eye = torch.eye(n, dtype=W.dtype, device=W.device)
    M = torch.inverse(eye + A)
    return torch.cat([M @ (eye - A), -2 * V @ M], -2)


def _periodic(weight: torch.Tensor, H: int, W: int, centre: int) -> torch.Tensor:
    """The kernel on the H x W torus, tap (i, j) added at ((i - centre) mod H, (j - centre) mod W)."""
    out = weight.new_zeros(*weight.shape[:2], H, W)
    for i in range(weight.shape[-2]):
        for j in range(weight.shape[-1]):
            out[:, :, (i - centre) % H, (j - centre) % W] += weight[:, :, i, j]
    return out


def cayley_conv2d(x: torch.Tensor, weight: torch.Tensor, alpha, bias=None, stride: int = 1) -> torch.Tensor:
    """The Cayley orthogonal convolution (Trockman & Kolter 2021) as published
    code computes it: pixel unshuffle for a stride, the full fft2 grid,
    ``torch.inverse`` per frequency, then products."""
    if stride > 1:
        x = F.pixel_unshuffle(x, stride)
    H, W = x.shape[-2:]
    w = alpha * weight / weight.norm()
    Q = cayley(torch.fft.fft2(_periodic(w, H, W, 0)).permute(2, 3, 0, 1))  # (H, W, c_out, c_in)
    y = torch.fft.ifft2(torch.einsum("uvoi,biuv->bouv", Q, torch.fft.fft2(x))).real
    return y if bias is None else y + bias[:, None, None]


BJORCK_PRESCALE_STEPS = 3


def bjorck(W: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Bjorck orthogonalisation (docs/math.md §6.1) as published code does it: a Python
    loop of products. ``W`` is first divided by its Gram-iteration bound of the
    spectral norm (``BJORCK_PRESCALE_STEPS`` squarings), so every singular
    value starts in (0, 1] and converges to 1. Tall: ``W <- 1.5 W - 0.5 W W^H W``
    with the Gram matrix ``W^H W``; wide: the same on ``W^H``."""
    m, n = W.shape[-2:]
    if m < n:
        return bjorck(W.mH, iters).mH
    tiny = torch.finfo(W.real.dtype).tiny
    W = W / gram_bound(W, BJORCK_PRESCALE_STEPS).clamp_min(tiny)[..., None, None]
    for _ in range(iters):
        W = 1.5 * W - 0.5 * W @ (W.mH @ W)
    return W


def _block_orthogonal(P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """The 2x2 kernel of a projector pair, taps (2, 2, c, c):
    ``[[P Q, P (I-Q)], [(I-P) Q, (I-P)(I-Q)]]``."""
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    rows, cols = (P, eye - P), (Q, eye - Q)
    return torch.stack([torch.stack([rows[a] @ cols[b] for b in range(2)]) for a in range(2)])


def _compose_kernels(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The kernel of applying B's conv, then A's: ``out[r] = sum_{q+p=r} A[q] B[p]``
    (taps (h, w, c, c)), one product per pair of taps."""
    ha, wa, hb, wb = A.shape[0], A.shape[1], B.shape[0], B.shape[1]
    out = A.new_zeros(ha + hb - 1, wa + wb - 1, A.shape[2], B.shape[3])
    for i in range(ha):
        for j in range(wa):
            for p in range(hb):
                for q in range(wb):
                    out[i + p, j + q] = out[i + p, j + q] + A[i, j] @ B[p, q]
    return out


def bcop_kernel(matrices: torch.Tensor, out_channels: int, in_channels: int, iters: int = 20) -> torch.Tensor:
    """The BCOP kernel (Li et al. 2019, docs/math.md §6.2) as published code builds it.

    ``matrices``: ``(2(k-1)+1, c, c)`` free matrices, ``c = max(out, in)``.
    Each is orthogonalised; the first, ``O``, gives the channel map; pair t of
    the others gives projectors ``P = U U^T`` on their first ``floor(c/2)``
    columns and the 2x2 block kernel of (P, Q); the k-1 blocks are composed
    into a k x k kernel ``K`` and the conv weight taps are the
    ``out x in`` corner of ``K[p] O``: orthonormal columns (out >= in) or rows.
    Returns the ``(out, in, k, k)`` conv2d weight.
    """
    c = matrices.shape[-1]
    ortho = [bjorck(m, iters) for m in matrices]
    K = torch.eye(c, dtype=matrices.dtype, device=matrices.device)[None, None]
    for t in range((len(ortho) - 1) // 2):
        P, Q = (o[:, : c // 2] @ o[:, : c // 2].mT for o in ortho[1 + 2 * t : 3 + 2 * t])
        K = _compose_kernels(_block_orthogonal(P, Q), K)
    taps = K @ ortho[0]
    return taps[:, :, :out_channels, :in_channels].permute(2, 3, 0, 1)


def bcop_conv2d(x: torch.Tensor, matrices: torch.Tensor, out_channels: int, bias=None, stride: int = 1,
                iters: int = 20) -> torch.Tensor:
    """The BCOP orthogonal convolution as published code computes it: pixel
    unshuffle for a stride, the kernel of ``bcop_kernel``, a circular conv2d."""
    if stride > 1:
        x = F.pixel_unshuffle(x, stride)
    y = conv(x, bcop_kernel(matrices, out_channels, x.shape[1], iters), "circular")
    return y if bias is None else y + bias[:, None, None]


def lot_conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride: int = 1, iters: int = 10) -> torch.Tensor:
    """The LOT convolution (Xu, Li & Li 2022) as published code computes it:
    per frequency of the full fft2 grid, the polar factor of the (centred)
    kernel's symbol by a Python loop of coupled Newton-Schulz steps for
    ``(V V^H)^{-1/2}`` (``S = V V^H + 1e-4 I`` over its Frobenius norm; ``Y <-
    Y T``, ``Z <- T Z``, ``T = (3 I - Z Y) / 2``), then ``ifft2``. On the input's
    own circular grid, like ``nn.LOTConv2d`` (the published layer pads by k//2
    and crops)."""
    if stride > 1:
        x = F.pixel_unshuffle(x, stride)
    H, W = x.shape[-2:]
    k = weight.shape[-1]
    centred = _periodic(weight, H, W, (k - 1) // 2)
    V = torch.fft.fft2(centred).permute(2, 3, 0, 1)  # (H, W, c_out, c_in)
    eye = torch.eye(V.shape[-2], dtype=V.dtype, device=V.device)
    S = V @ V.mH + 1e-4 * eye
    nrm = torch.linalg.matrix_norm(S)[..., None, None] + 1e-4
    Y, Z = S / nrm, eye.expand_as(S)
    for _ in range(iters):
        T = 0.5 * (3 * eye - Z @ Y)
        Y, Z = Y @ T, T @ Z
    Q = Z @ V / nrm.sqrt()
    y = torch.fft.ifft2(torch.einsum("uvoi,biuv->bouv", Q, torch.fft.fft2(x))).real
    return y if bias is None else y + bias[:, None, None]


def soc_conv2d(x: torch.Tensor, M: torch.Tensor, out_channels: int, bias=None, stride: int = 1,
               terms: int = 12, vectors=None, steps: int = 0) -> torch.Tensor:
    """The skew orthogonal convolution (Singla & Feizi 2021) as published code
    computes it: ``L = (M - M^T) / 2`` (channels swapped, taps flipped), scaled
    by 0.7 (1 for k = 1) over the smallest spectral norm of four reshapes of
    ``L``: with ``vectors`` (four persistent ``[u, v]`` pairs, as published)
    the estimates ``|u^T A v|`` (at least ``||A||_F / sqrt(min side)``) after
    ``steps`` power-iteration steps on each pair; without,
    ``torch.linalg.matrix_norm(ord=2)``. Then the series ``sum_{i <= terms} L^i x / i!``
    by repeated zero-padded conv2d; inputs zero-padded to ``M``'s channels,
    the first ``out_channels`` kept."""
    if stride > 1:
        x = F.pixel_unshuffle(x, stride)
    L = 0.5 * (M - M.transpose(0, 1).flip(2, 3))
    c, _, kh, kw = L.shape
    reshapes = [L.permute(0, 2, 1, 3).reshape(c * kh, c * kw), L.permute(0, 3, 1, 2).reshape(c * kw, c * kh),
                L.reshape(c, -1), L.transpose(0, 1).reshape(c, -1)]
    if vectors is None:
        sigma = torch.stack([torch.linalg.matrix_norm(A, ord=2) for A in reshapes]).min()
    else:
        estimates = []
        for A, (u, v) in zip(reshapes, vectors):
            with torch.no_grad():
                for _ in range(steps):
                    v.copy_(F.normalize(A.detach().mT @ u, dim=0, eps=1e-12))
                    u.copy_(F.normalize(A.detach() @ v, dim=0, eps=1e-12))
            floor = torch.linalg.matrix_norm(A) / min(A.shape) ** 0.5
            estimates.append(torch.maximum((u.clone() @ A @ v.clone()).abs(), floor))
        sigma = torch.stack(estimates).min()
    L = (0.7 if kh > 1 else 1.0) * L / sigma
    if x.shape[1] < c:
        x = F.pad(x, (0, 0, 0, 0, 0, c - x.shape[1]))
    z = term = x
    for i in range(1, terms + 1):
        term = F.conv2d(term, L, padding=kh // 2) / i
        z = z + term
    z = z[:, :out_channels]
    return z if bias is None else z + bias[:, None, None]


def _same(x, weight, padding_mode, bias=None):
    kh, kw = weight.shape[-2:]
    pads = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    return F.conv2d(F.pad(x, pads, mode="constant" if padding_mode == "zeros" else "circular"), weight, bias)


def _same_transpose(y, weight, padding_mode):
    kh, kw = weight.shape[-2:]
    pads = (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)
    mode = "constant" if padding_mode == "zeros" else "circular"
    return F.conv2d(F.pad(y, pads, mode=mode), weight.transpose(0, 1).flip(2, 3))


def aol_conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, padding_mode: str = "zeros") -> torch.Tensor:
    """The AOL convolution (Prach & Lampert 2022) as published code computes
    it: ``V = conv2d(K^T, K^T, padding=k-1)``, the input channels scaled by
    ``(sum |V_ij| + 1e-6)^{-1/2}``, then the 'same' convolution."""
    kt = weight.transpose(0, 1)
    V = F.conv2d(kt, kt, padding=(weight.shape[-2] - 1, weight.shape[-1] - 1))
    d = (V.abs().sum((1, 2, 3)) + 1e-6).rsqrt()
    return _same(x, weight * d[None, :, None, None], padding_mode, bias)


def cpl_conv2d(x: torch.Tensor, weight: torch.Tensor, bias, u: torch.Tensor, padding_mode: str = "zeros",
               iters: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The convex potential layer (Meunier et al. 2022) as published code
    computes it: ``iters`` power-iteration steps on ``W^T W`` from the
    persistent vector ``u`` (one per training step), ``sigma = <W u, v>``,
    then ``x - 2 / sigma^2 W relu(W^T x + b)``. Returns the output and the
    new ``u``. The estimate can fall below ``||W||``, so the layer is not
    guaranteed 1-Lipschitz (``nn.CPLConv2d`` uses a certified bound)."""
    with torch.no_grad():
        for _ in range(iters):
            v = _same(u, weight, padding_mode)
            v = v / (v.norm() + 1e-12)
            u = _same_transpose(v, weight, padding_mode)
            u = u / (u.norm() + 1e-12)
    v = _same(u, weight, padding_mode)
    sigma = (v * (v / (v.norm() + 1e-12)).detach()).sum()
    z = torch.relu(_same(x, weight, padding_mode, bias))
    return x - 2 / (sigma**2 + 1e-6) * _same_transpose(z, weight, padding_mode), u


def sll_conv2d(x: torch.Tensor, weight: torch.Tensor, bias, log_q: torch.Tensor,
               padding_mode: str = "zeros") -> torch.Tensor:
    """The SDP-based Lipschitz layer (Araujo et al. 2023) as published code
    computes it (with q on the column axis, as in its paper and linear layer):
    ``T_i = sum_j |W^T W|_ij q_j / q_i``, ``x - 2 W T^{-1} relu(W^T x + b)``."""
    kh, kw = weight.shape[-2:]
    G = F.conv2d(weight, weight, padding=(kh - 1, kw - 1)).abs().sum((2, 3))
    q = torch.exp(log_q)
    T = (G * q[None, :]).sum(1) / q
    t = torch.where(T > 0, 1 / T, torch.zeros_like(T))
    z = torch.relu(_same(x, weight, padding_mode, bias))
    return x - 2 * _same_transpose(t[:, None, None] * z, weight, padding_mode)


def svdvals(A: torch.Tensor) -> torch.Tensor:
    """Batched singular values, descending (``torch.linalg.svdvals``)."""
    _checks.check_matrices(A)
    return torch.linalg.svdvals(A)


def conv(x: torch.Tensor, weight: torch.Tensor, padding: str = "circular", stride: int = 1) -> torch.Tensor:
    """The layer itself. Circular: pad ``k//2`` before and ``(k-1)//2`` after,
    then conv2d. Zeros: the 'same' padding of ``conv2d(padding="same")``
    (``(k-1)//2`` before), then conv2d with the stride."""
    kh, kw = weight.shape[-2:]
    if padding == "circular":
        pads = (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)
        return F.conv2d(F.pad(x, pads, mode="circular"), weight, stride=stride)
    # conv2d(padding="same")'s split, explicit so that strides work too
    pads = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    return F.conv2d(F.pad(x, pads), weight, stride=stride)


def dense_operator(weight: torch.Tensor, input_size, padding: str = "circular", stride: int = 1) -> torch.Tensor:
    """The dense matrix ``T`` of the layer, ``(c_out*Ho*Wo) x (c_in*H*W)``
    (docs/math.md §7): the layer applied to every basis image. Ground truth for the
    tests; practical up to ``c_in*H*W`` of a few thousand."""
    _checks.check_weight(weight)
    H, W = _checks.input_size_pair(input_size, weight)
    padding = _checks.check_padding(padding)
    s = _checks.check_stride(stride, H, W)
    c_in = weight.shape[1]
    n = c_in * H * W
    basis = torch.eye(n, dtype=weight.dtype, device=weight.device).reshape(n, c_in, H, W)
    out = conv(basis, weight, padding, s)  # (n, c_out, Ho, Wo): column j of T
    return out.reshape(n, -1).T
