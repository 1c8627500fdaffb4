"""The zero-padding approximation of a conv layer's spectrum (Yi 2020, and the
model of docs/accuracy.md; docs/math.md §4): a model spectrum fitted to the
zero-padded layer's exact Frobenius norm and fourth moment."""

from __future__ import annotations

import math

import torch

from .. import _autograd
from .._precision import tap_scale
from ._grid import (circular_half, circular_values, complex_dtype, dft_angles, grid_spectrum, phases, row_chunks,
                    wants_grad, with_multiplicity)

# Frequency samples across an edge for the boundary pixel classes: they hold
# one row or column each, and their truncated symbols vary slowly.
BOUNDARY_GRID = 16


def tap_classes(n: int, k: int, adjoint: bool = False) -> list[tuple[tuple[bool, ...], int]]:
    """The positions along one axis of a 'same' conv (left padding (k-1)//2)
    grouped by which of the k taps are valid there: [(valid taps, number of
    positions)], the largest class first. Output positions (the rows of T): the
    taps that land inside the image. With ``adjoint``, input positions (the
    rows of T^T): the taps whose output pixel lies inside the image."""
    p = (k - 1) // 2
    counts: dict[tuple[bool, ...], int] = {}
    for y in range(n):
        mask = tuple(0 <= (y - t + p if adjoint else y + t - p) < n for t in range(k))
        counts[mask] = counts.get(mask, 0) + 1
    return sorted(counts.items(), key=lambda item: -item[1])


def zero_padded_spectrum(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The zero-padding approximation of docs/accuracy.md: a model spectrum
    with the exact Frobenius norm of the zero-padded layer, blended with the
    circular spectrum (rescaled to that norm too) so that the sum of sigma^4
    matches the exact ||T^T T||_F^2. The model depends on the regime:
      - clustered (the symbol's singular-value branches stay in narrow bands
        that never meet): the layer is a channel mixing plus a small spatial
        perturbation, its singular vectors spread over the whole image, and the
        model is the Fourier-block diagonal of T^T T (pinched_values);
      - otherwise the boundary has modes of its own, and the model is the
        mixture of per-pixel-class symbols and the sine grid
        (_local_symbol_model).
    Computed on the kernel scaled to a largest tap of 1 and scaled back (the
    spectrum is homogeneous; tap_scale).
    """
    largest = tap_scale(weight)
    return largest * _unit_kernel_spectrum(weight / largest, H, W)


def _unit_kernel_spectrum(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    count = H * W * min(weight.shape[:2])
    frob2 = zero_padded_frobenius2(weight, H, W)

    def fitted(values):  # the first `count` of the sorted values, rescaled to ||T||_F
        return _rescaled(values.sort(descending=True).values[:count], frob2)

    half = circular_half(weight, H, W)
    circular = with_multiplicity(half, W)
    alpha = _sine_weight(weight)
    if _no_data_dependent_branches():  # both models, one selected
        model = torch.where(clustered(half), fitted(pinched_values(weight, H, W)),
                            _rescaled(_local_symbol_model(weight, H, W, circular, alpha), frob2))
    elif is_clustered(half):
        model = fitted(pinched_values(weight, H, W))
    else:
        model = _rescaled(_local_symbol_model(weight, H, W, circular, alpha), frob2)
    circular = fitted(circular)
    # Blend the two in quantile space so that sum sigma^4 matches the exact
    # ||T^T T||_F^2 (the weight is chosen without autograd, like an argmax).
    with torch.no_grad():
        target = zero_padded_m4(weight, H, W)
        # sum ((1 - lam) a + lam b)^4 is a quartic in lam: five sums, then the grid
        a = model.detach().double()
        d = circular.detach().double() - a
        coeffs = torch.stack([(a**4).sum(), 4 * (a**3 * d).sum(), 6 * (a**2 * d**2).sum(), 4 * (a * d**3).sum(),
                              (d**4).sum()])
        lam = torch.linspace(0, 1, 101, device=weight.device, dtype=torch.float64)
        m4 = (coeffs * lam[:, None] ** torch.arange(5, device=lam.device)).sum(1)
        lam = lam.index_select(0, (m4 - target).abs().argmin().reshape(1))[0]
    return _rescaled((1 - lam) * model + lam * circular, frob2)


def _no_data_dependent_branches() -> bool:
    """Whether the model must be chosen without Python branches on values: a
    torch.compile graph, or a torch.func transform (vmap batches the values)."""
    return torch.compiler.is_compiling() or _autograd.functorch_active()


def _rescaled(values: torch.Tensor, frob2: torch.Tensor) -> torch.Tensor:
    """values scaled to the sum of squares frob2; all zeros stay zeros (a zero kernel)."""
    return values * (frob2 / values.square().sum().clamp(min=torch.finfo(values.dtype).tiny)).sqrt()


# A branch of the symbol's singular values counts as a narrow band when it
# varies over the grid by at most this fraction of its maximum.
CLUSTER_BAND_WIDTH = 1 / 3


def is_clustered(half: torch.Tensor) -> bool:
    """clustered(half) as a bool."""
    return bool(clustered(half))


def clustered(half: torch.Tensor) -> torch.Tensor:
    """Whether (a 0-dim bool tensor) every branch sigma_j(F(w)) of the circular spectrum (half grid,
    (H, W//2 + 1, r), descending per frequency) stays in a narrow band and the
    bands of neighbouring branches do not overlap: the spectrum is r isolated
    clusters, as for a dominant centre tap (a channel mixing with distinct
    singular values) plus small spatial taps."""
    with torch.no_grad():
        hi, lo = half.amax((0, 1)), half.amin((0, 1))
        return (hi - lo <= CLUSTER_BAND_WIDTH * hi).all() & (lo[:-1] > hi[1:]).all()


def pinched_values(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The square roots of the eigenvalues of the Fourier-block diagonal
    ("pinching") of T^T T, on the smaller channel side (T T^T when
    c_out < c_in): per frequency w, D(w) = sum over pixel classes of
    (pixels / HW) F_M(w)^H F_M(w), F_M the symbol of the kernel truncated to the
    taps valid in the class. H*W*min(c_out, c_in) values, unsorted.

    A pinching keeps the trace (so the Frobenius norm is exact) and its
    eigenvalues are majorized by those of T^T T (so its sum of sigma^4 is at
    most the exact one): less dispersed than the truth, by second-order
    terms when the Fourier modes are close to singular vectors. Computed by
    row class, with tap pairs along the columns: D(u, v) = sum_{b, b'}
    phi(v, b, b') A(u)[b, b'], A(u) = sum_r (n_r / H) G_r(u)[b]^H G_r(u)[b'],
    G_r(u)[b] = sum_{a in r} K[:, :, a, b] e^{-iua}. Differentiable.
    """
    c_out, c_in, kh, kw = weight.shape
    adjoint = c_out < c_in
    K = (weight.transpose(0, 1) if adjoint else weight).permute(2, 3, 0, 1)  # (kh, kw, c_a, c_b), Gram on c_b
    c_a, c_b = K.shape[-2:]
    cdt = complex_dtype(weight.dtype)
    K = K.to(cdt)
    dev = weight.device

    def class_masks(n, k):
        classes = tap_classes(n, k, adjoint)
        masks = torch.tensor([m for m, _ in classes], dtype=torch.float64, device=dev)
        return masks, torch.tensor([c for _, c in classes], dtype=torch.float64, device=dev) / n

    row_masks, row_shares = class_masks(H, kh)
    col_masks, col_shares = class_masks(W, kw)
    Ev = phases(dft_angles(W, dev, W // 2 + 1), kw, cdt)  # (Wh, kw): e^{-ivb}
    overlap = torch.einsum("c,cb,cd->bd", col_shares, col_masks, col_masks).to(cdt)
    phi = Ev.conj()[:, :, None] * Ev[:, None, :] * overlap  # (Wh, b, b')
    Eu_all = phases(dft_angles(H, dev), kh, cdt)  # (H, kh)
    per_row = Ev.shape[0] * c_b * c_b + kw * kw * c_b * c_b + kw * c_a * c_b
    values = []
    for u0, u1 in row_chunks(H, per_row):
        Eu = Eu_all[u0:u1]
        A = None
        for mask, share in zip(row_masks, row_shares):
            G = torch.einsum("ua,abxy->ubxy", Eu * mask.to(cdt), K)  # (U, kw, c_a, c_b)
            part = torch.einsum("ubxy,udxz->ubydz", G.conj(), G) * share.to(cdt)
            A = part if A is None else A + part
        D = torch.einsum("vbd,ubydz->uvyz", phi, A)  # (U, Wh, c_b, c_b), Hermitian
        ev = torch.linalg.eigvalsh(D)  # >= 0 up to rounding
        # the root of the positive ones; zeros (and rounding below) give 0 with a zero gradient
        positive = ev > torch.finfo(ev.dtype).tiny
        values.append(torch.where(positive, torch.where(positive, ev, 1).sqrt(), 0))
    return with_multiplicity(torch.cat(values, 0), W).to(weight.dtype)


def _local_symbol_model(weight: torch.Tensor, H: int, W: int, circular: torch.Tensor,
                        alpha: torch.Tensor) -> torch.Tensor:
    """The weighted quantiles of a mixture of two sample sets, ``H*W*r`` values
    descending (circular: the circular values, reused for the interior class
    when it has every tap):
      - local symbols: for each class of output pixels (interior, edge rows and
        columns, corners), the circular singular values of the kernel truncated
        to the taps that land inside the image, weighted by the class's size;
      - the sine grid w = pi j / (n+1) in two half planes (the Dirichlet modes
        that diagonalise symmetric banded Toeplitz matrices), weighted by the
        evenness of the kernel's off-centre taps (alpha, _sine_weight).
    """
    kh, kw = weight.shape[-2:]
    row_classes, col_classes = tap_classes(H, kh), tap_classes(W, kw)
    values, weights = [], []
    for i, (row_taps, row_count) in enumerate(row_classes):
        for j, (col_taps, col_count) in enumerate(col_classes):
            if all(row_taps) and all(col_taps):
                v = circular  # the interior class of a kernel no wider than the image
            else:
                rows_ok = torch.tensor(row_taps, device=weight.device)
                cols_ok = torch.tensor(col_taps, device=weight.device)
                g1 = H if i == 0 else min(H, BOUNDARY_GRID)  # the interior class gets the full grid
                g2 = W if j == 0 else min(W, BOUNDARY_GRID)
                v = circular_values(weight * (rows_ok[:, None] & cols_ok).to(weight.dtype), g1, g2)
            values.append(v)
            weights.append(torch.full((v.numel(),), row_count * col_count / (H * W * v.numel()),
                                      dtype=torch.float64, device=weight.device))
    # eager mode skips a sine grid of weight 0; a traced graph or vmap computes it regardless
    if _no_data_dependent_branches() or float(alpha) > 0:
        weights = [w * (1 - alpha) for w in weights]
        j1 = torch.arange(1, H + 1, device=weight.device, dtype=torch.float64) * (math.pi / (H + 1))
        j2 = torch.arange(1, W + 1, device=weight.device, dtype=torch.float64) * (math.pi / (W + 1))
        v = grid_spectrum(weight, torch.cat([j1, -j1]), j2, wants_grad(weight)).flatten()
        values.append(v)
        weights.append((alpha / v.numel()).expand(v.numel()))
    return _weighted_quantiles(torch.cat(values), torch.cat(weights), H * W * min(weight.shape[:2]))


def _axis_tap_sets(n: int, k: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """For each offset d, |d| < k: the taps s that output rows y and y + d
    (both inside) read from one common input row, as distinct 0/1 masks over s
    with the number of rows y having each. Tap s of row y reads input row
    y + s - p, which tap s - d of row y + d reads too."""
    p = (k - 1) // 2
    sets = {}
    for d in range(-(k - 1), k):
        counts: dict[tuple[int, ...], int] = {}
        for y in range(max(0, -d), min(n, n - d)):
            mask = tuple(int(0 <= y + s - p < n and 0 <= s - d < k) for s in range(k))
            if any(mask):
                counts[mask] = counts.get(mask, 0) + 1
        if counts:
            sets[d] = (torch.tensor(list(counts), dtype=torch.float64), torch.tensor(list(counts.values()),
                                                                                      dtype=torch.float64))
    return sets


def zero_padded_m4(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """sum sigma^4 = ||T T^T||_F^2 of the zero-padded layer, exactly, from
    the tap products K_s K_{s-d}^T: the block of T T^T between output pixels
    y and y + d is the sum of those over the taps both read inside the image."""
    c_out, _, kh, kw = weight.shape
    K = weight.detach().double().permute(2, 3, 0, 1)  # (kh, kw, c_out, c_in)
    total = None  # out of place: batched under vmap
    rows, cols = _axis_tap_sets(H, kh), _axis_tap_sets(W, kw)
    for d1, (masks1, counts1) in rows.items():
        a0, a1 = max(0, d1), min(kh, kh + d1)  # taps s with s - d1 inside the kernel
        for d2, (masks2, counts2) in cols.items():
            b0, b1 = max(0, d2), min(kw, kw + d2)
            Q = K.new_zeros(kh, kw, c_out, c_out)
            Q[a0:a1, b0:b1] = K[a0:a1, b0:b1] @ K[a0 - d1 : a1 - d1, b0 - d2 : b1 - d2].mT
            M = torch.einsum("xa,yb,abij->xyij", masks1.to(K.device), masks2.to(K.device), Q)
            part = (counts1.to(K.device)[:, None] * counts2.to(K.device)[None, :] * M.square().sum((-2, -1))).sum()
            total = part if total is None else total + part
    return total


# Below this weight the sine grid moves no quantile measurably; skipping it
# saves its cost (4x the circular spectrum's).
SINE_WEIGHT_MIN = 0.05


def _sine_weight(weight: torch.Tensor) -> torch.Tensor:
    """2 rho - 1 clamped to [0, 1] (a 0-dim float64 tensor; 0 below
    SINE_WEIGHT_MIN), rho the fraction of the energy of the off-centre taps in
    their even part (point symmetry about the centre): 1 for a symmetric
    kernel, about 0 for a random one. The centre tap adds a constant to the
    symbol and says nothing of its parity, so it is left out."""
    with torch.no_grad():
        w = weight.detach().clone()
        kh, kw = w.shape[-2:]
        if kh % 2 and kw % 2:
            w[:, :, kh // 2, kw // 2] = 0
        total = w.square().sum().double()
        rho = (0.5 * (w + w.flip(-1, -2))).square().sum().double() / total
        alpha = (2 * rho - 1).clamp(0, 1)
        return torch.where((total > 0) & (alpha >= SINE_WEIGHT_MIN), alpha, torch.zeros_like(alpha))


def zero_padded_frobenius2(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """||T||_F^2 of the zero-padded layer: sum_st ||K_st||^2 cnt_H(s) cnt_W(t),
    cnt(s) the number of output rows whose tap s lands inside (docs/math.md §4.4)."""
    kh, kw = weight.shape[-2:]

    def cnt(n, k):
        return (n - (torch.arange(k, device=weight.device) - (k - 1) // 2).abs()).clamp(min=0).to(weight.dtype)

    return (weight.square().sum((0, 1)) * cnt(H, kh)[:, None] * cnt(W, kw)[None, :]).sum()


def _weighted_quantiles(values: torch.Tensor, weights: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` values of the weighted empirical distribution at the quantile
    midpoints (i + 1/2) / count, descending. Differentiable (a gather)."""
    order = values.argsort(descending=True)
    cumulative = weights[order].cumsum(0)
    targets = (torch.arange(count, device=values.device, dtype=torch.float64) + 0.5) * (cumulative[-1] / count)
    idx = torch.searchsorted(cumulative, targets).clamp(max=values.numel() - 1)
    return values[order[idx]]

