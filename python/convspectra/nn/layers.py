"""Orthogonal convolutions: Cayley (Trockman & Kolter 2021), LOT (Xu, Li & Li
2022) and BCOP (Li et al. 2019), docs/math.md §5 and §6."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .. import _checks, linalg
from .._precision import autocast_layer, in_full_float32
from ._eval_cache import EvalCached

__all__ = ["CayleyConv2d", "LOTConv2d", "BCOPConv2d", "bcop_kernel", "circular_conv2d"]


class _OrthogonalConv2d(EvalCached):
    """What the orthogonal layers share: the arguments, a stride as pixel
    unshuffle (s*s times the channels, kernel max(1, ceil(k/s))), input checks,
    and an eval-mode cache of whatever the parameters determine, dropped when a
    parameter changes or the module returns to train()."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.kernel_size = _checks.positive_int(kernel_size, "kernel_size")
        self.stride = _checks.positive_int(stride, "stride")
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if _checks.check_bool(bias, "bias") else None

    @property
    def _unshuffled(self) -> tuple[int, int]:
        """(channels, kernel size) of the stride-1 layer after pixel unshuffle."""
        return self.in_channels * self.stride**2, max(1, math.ceil(self.kernel_size / self.stride))

    def extra_repr(self) -> str:
        k = self.kernel_size
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=({k}, {k}), stride=({self.stride}, "
                f"{self.stride}), bias={self.bias is not None}")

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        _checks.check_tensor(x, "x")
        if x.dim() != 4:
            raise ValueError(f"x must be 4-D (batch, channels, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels, got {x.shape[1]}")
        if x.shape[-2] == 0 or x.shape[-1] == 0:
            raise ValueError(f"x must have non-zero H and W, got {tuple(x.shape[-2:])}")
        s = self.stride
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(f"x's H and W must be divisible by the stride {s}, got {tuple(x.shape[-2:])}")
        if s == 1:
            return x
        if x.shape[0] == 0:  # pixel_unshuffle returns an empty batch unchanged: the same reshape, spelt out
            n, c, H, W = x.shape
            return x.reshape(n, c, H // s, s, W // s, s).permute(0, 1, 3, 5, 2, 4).reshape(n, c * s * s, H // s, W // s)
        return nn.functional.pixel_unshuffle(x, s)

    def _add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None, None]


def kernel_on_grid(weight: torch.Tensor, H: int, W: int, centre: int = 0) -> torch.Tensor:
    """The kernel as an H x W periodic array: tap t at offset (t - centre) mod
    the size, taps that land on the same offset summed (a kernel larger than
    the grid is folded, never cropped)."""
    kh, kw = weight.shape[-2:]
    rows = (torch.arange(kh, device=weight.device) - centre) % H
    cols = (torch.arange(kw, device=weight.device) - centre) % W
    grid = weight.new_zeros(*weight.shape[:2], H, kw).index_add(2, rows, weight)
    return weight.new_zeros(*weight.shape[:2], H, W).index_add(3, cols, grid)


class _FourierOrthogonalConv2d(_OrthogonalConv2d):
    """An orthogonal layer applied in the Fourier domain: per frequency of the
    input's rfft2 grid, ``y = irfft2(Q(w) rfft2(x)(w)) + bias`` with the
    matrices of ``_frequency_matrices`` (cached per input size in eval mode)."""

    def _frequency_matrices(self, H: int, W: int, dtype) -> torch.Tensor:
        raise NotImplementedError

    @autocast_layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare_input(x)
        n = x.shape[0]
        if n == 0:  # FFT backends reject an empty batch: one zero image, dropped from the output
            x = torch.cat([x, x.new_zeros(1, *x.shape[1:])])
        H, W = x.shape[-2:]
        Q = self._cached((H, W, x.device, x.dtype), lambda: self._frequency_matrices(H, W, x.dtype))
        X = torch.fft.rfft2(x).permute(2, 3, 1, 0)  # (H, W//2+1, in, batch)
        y = torch.fft.irfft2((Q @ X).permute(3, 2, 0, 1), s=(H, W))
        return self._add_bias(y[:n])


class CayleyConv2d(_FourierOrthogonalConv2d):
    """Orthogonal circular convolution by the Cayley transform (Trockman &
    Kolter 2021, docs/math.md §5.2).

    Per frequency of the input's ``rfft2`` grid, the symbol of the scaled kernel
    ``alpha * weight / ||weight||_F`` goes through the fused Cayley map, and
    ``y = irfft2(Q(w) rfft2(x)(w)) + bias``: an isometry when out_channels >=
    in_channels * stride^2, a co-isometry otherwise, on any input size.
    ``stride=s`` is an invertible downsampling (pixel unshuffle, s*s times the
    channels) followed by a stride-1 layer with kernel size max(1, ceil(k/s)).
    ``alpha`` is a trainable scale registered at construction. In eval mode the
    per-frequency matrices are cached per input size (computed without autograd)
    and dropped when a parameter changes or the module returns to train().
    A batch of 0 images gives an empty output; H or W of 0 is an error.
    Differentiable in every mode: double backward, jvp, and torch.func
    (grad, hessian, vmap over parameter ensembles through functional_call).

    Zero parameters: a zero ``weight`` (or ``alpha``) is the Cayley map of the
    zero matrix, the identity on the first min(in * stride^2, out) channels
    (zero padding or truncation of the others), with finite gradients (at a
    zero weight the scale is ``alpha`` alone, not ``alpha / 0``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)
        c_in, k = self._unshuffled
        self.weight = nn.Parameter(torch.empty(self.out_channels, c_in, k, k))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's initialisation
        # alpha = ||weight||_F: the layer starts from the Cayley map of the initial kernel
        self.alpha = nn.Parameter(self.weight.detach().norm().clone())

    def _frequency_matrices(self, H: int, W: int, dtype) -> torch.Tensor:
        """Q on the rfft2 grid: (H, W//2+1, out, in * stride^2)."""
        # weight / ||weight||_F through weight / max |w_ij| first, so that the norm neither underflows
        # (weights ~1e-22 in float32) nor overflows (~1e20); an exactly zero weight gives w = 0
        scale = self.weight.detach().abs().amax()
        unit = self.weight / torch.where(scale > 0, scale, torch.ones_like(scale))
        norm = unit.norm()
        w = self.alpha * unit / torch.where(norm > 0, norm, torch.ones_like(norm))
        F = torch.fft.rfft2(kernel_on_grid(w.to(dtype), H, W)).permute(2, 3, 0, 1)
        return linalg.cayley(F.contiguous())


class LOTConv2d(_FourierOrthogonalConv2d):
    """Layer-wise orthogonal training (Xu, Li & Li 2022, docs/math.md §6.3):
    per frequency of the input's ``rfft2`` grid, the orthogonal polar factor
    ``V (V^H V)^{-1/2}`` of the symbol ``V`` of a free kernel, by ``iters``
    fused Bjorck (Newton-Schulz) steps in one batched call, applied as
    ``CayleyConv2d`` is: an isometry when out_channels >= in_channels *
    stride^2, a co-isometry otherwise, on the circular grid of the input (the
    published layer pads the input by k//2 and crops, which makes it
    1-Lipschitz but not orthogonal). ``stride=s``: pixel unshuffle, then a
    stride-1 layer with kernel max(1, ceil(k/s)). Initialised to the identity
    (a centred Dirac) when out_channels == in_channels * stride^2.

    Orthogonal to the iteration's convergence: Bjorck prescales every symbol
    into (0, 1] by an upper bound of its norm, and each step takes a singular
    value ``s`` to ``s (3 - s^2) / 2``; with the default 25 steps every
    frequency whose symbol has condition number up to 1e3 is orthogonal to
    float64 rounding (a singular value 1e-3 of the prescaled symbol reaches
    1 - 1e-12 within 23 steps). A frequency where the symbol is singular stays
    singular (its polar factor is not unique): the layer is then a partial
    isometry there, still 1-Lipschitz; ``cs.lipschitz_bound`` measures it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True,
                 iters: int = 25):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)
        self.iters = _checks.int_in_range(iters, "iters", 1, linalg.MAX_BJORCK_ITERS)
        c_in, k = self._unshuffled
        self.weight = nn.Parameter(torch.empty(self.out_channels, c_in, k, k))
        if self.out_channels == c_in:  # a delta on the centre tap (k-1)//2, where the symbol is centred
            with torch.no_grad():
                self.weight.zero_()
                self.weight[:, :, (k - 1) // 2, (k - 1) // 2] = torch.eye(c_in)
        else:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _frequency_matrices(self, H: int, W: int, dtype) -> torch.Tensor:
        """The polar factors on the rfft2 grid: (H, W//2+1, out, in * stride^2)."""
        k = self.weight.shape[-1]
        # centred on tap (k-1)//2, as conv2d(padding='same') centres it: the centred delta is the identity
        F = torch.fft.rfft2(kernel_on_grid(self.weight.to(dtype), H, W, (k - 1) // 2)).permute(2, 3, 0, 1)
        return linalg.bjorck(F.contiguous(), self.iters)



@in_full_float32
def bcop_kernel(matrices: torch.Tensor, out_channels: int, in_channels: int, iters: int = 20) -> torch.Tensor:
    """The BCOP kernel (Li et al. 2019, docs/math.md §6.2): an ``(out, in, k, k)`` conv
    weight that is orthogonal as a circular convolution, from ``2(k-1)+1``
    free ``c x c`` matrices, ``c = max(out, in)``, shape ``(2(k-1)+1, c, c)``.

    All matrices go through one fused Bjorck call. The first, ``O``, is the
    channel map; pair t of the others gives projectors ``P_t``, ``Q_t`` of rank
    ``floor(c/2)`` and the 2x2 block kernel ``(P + (I-P) z1)(Q + (I-Q) z2)``.
    The blocks are composed one at a time, each with two batched products over
    the taps (``Q K``, then ``P L``); the weight taps are the ``out x in``
    corner of ``K[p] O``. Differentiable (double backward, jvp and torch.func
    included).

    An all-zero matrix has no orthogonal polar factor (Bjorck keeps it zero,
    which would make the kernel zero): it is replaced by the identity, with
    the gradient there. ``iters`` (0 to ``linalg.MAX_BJORCK_ITERS``) is the
    number of Bjorck steps.
    """
    return _bcop_kernel(matrices, out_channels, in_channels, iters)[0]


def _bcop_kernel(matrices: torch.Tensor, out_channels: int, in_channels: int, iters: int):
    """bcop_kernel and the Bjorck-orthogonalised matrices."""
    _checks.check_tensor(matrices, "matrices")
    if matrices.dim() != 3 or matrices.shape[1] != matrices.shape[2] or matrices.shape[0] % 2 != 1:
        raise ValueError(f"matrices must have shape (2(k-1)+1, c, c), got {tuple(matrices.shape)}")
    c = matrices.shape[-1]
    out_channels = _checks.positive_int(out_channels, "out_channels")
    in_channels = _checks.positive_int(in_channels, "in_channels")
    if max(out_channels, in_channels) != c:
        raise ValueError(f"matrices must be c x c with c = max(out_channels, in_channels) = "
                         f"{max(out_channels, in_channels)}, got c = {c}")
    iters = _checks.int_in_range(iters, "iters", 0, linalg.MAX_BJORCK_ITERS)
    eye = torch.eye(c, dtype=matrices.dtype, device=matrices.device)
    is_zero = (matrices == 0).flatten(1).all(1).to(matrices.dtype)  # on the device: no sync
    ortho = linalg.bjorck(matrices + is_zero[:, None, None] * eye, iters)
    half = ortho[1:, :, : c // 2]
    proj = half @ half.mT  # (2(k-1), c, c)
    K = eye[None, None]
    for t in range((matrices.shape[0] - 1) // 2):
        P, Q = proj[2 * t], proj[2 * t + 1]
        h, w = K.shape[:2]
        QK = Q @ K  # the column factor: L[:, j] = Q K[:, j] + (I - Q) K[:, j-1]
        zero_col = K.new_zeros(h, 1, c, c)
        L = torch.cat([QK, zero_col], 1) + torch.cat([zero_col, K - QK], 1)
        PL = P @ L  # the row factor: K[i] = P L[i] + (I - P) L[i-1]
        zero_row = K.new_zeros(1, w + 1, c, c)
        K = torch.cat([PL, zero_row], 0) + torch.cat([zero_row, L - PL], 0)
    taps = K[:, :, :out_channels, :] @ ortho[0][:, :in_channels]
    return taps.permute(2, 3, 0, 1), ortho


def fold_kernel(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Along each axis where the kernel is larger than the H x W grid, its taps
    summed modulo the size: the same circular operator on that grid. Tap t of a
    folded axis acts at offset t - k//2, so tap j of the result acts at offset j."""
    kh, kw = weight.shape[-2:]
    if kh > H:
        rows = (torch.arange(kh, device=weight.device) - kh // 2) % H
        weight = weight.new_zeros(*weight.shape[:2], H, kw).index_add(2, rows, weight)
    if kw > W:
        cols = (torch.arange(kw, device=weight.device) - kw // 2) % W
        weight = weight.new_zeros(*weight.shape[:3], W).index_add(3, cols, weight)
    return weight


def circular_conv2d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Circular convolution with conv2d's orientation, ``k//2`` taps before the
    centre (``reference.conv(..., 'circular')``), on any input size: a kernel
    larger than the input is first folded onto the input's periodic grid."""
    H, W = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    folded = fold_kernel(weight, H, W)

    def pads(k, n):  # (before, after) along one axis; a folded axis' tap j acts at offset j
        return (0, n - 1) if k > n else (k // 2, (k - 1) // 2)

    return nn.functional.conv2d(nn.functional.pad(x, pads(kw, W) + pads(kh, H), mode="circular"), folded)


class BCOPConv2d(_OrthogonalConv2d):
    """Orthogonal circular convolution by Block Convolution Orthogonal
    Parameterization (Li et al. 2019, docs/math.md §6.2).

    The ``k x k`` kernel is built by ``bcop_kernel`` from ``2(k-1)+1`` free
    ``c x c`` matrices (``c = max(in * stride^2, out)``, initialised
    orthogonal) and applied as a circular convolution: an isometry when
    out_channels >= in_channels * stride^2, a co-isometry otherwise, exact up to
    Bjorck's convergence (``bjorck_iters`` steps). ``stride=s`` is pixel
    unshuffle followed by a stride-1 layer with kernel max(1, ceil(k/s)). In
    eval mode the kernel is cached and rebuilt when a parameter changes.
    A batch of 0 images gives an empty output; H or W of 0 is an error.
    Differentiable in every mode: double backward, jvp, and torch.func
    (grad, hessian, vmap over parameter ensembles through functional_call).

    Zero parameters: an all-zero matrix is replaced by the identity (see
    ``bcop_kernel``), so a zero ``matrices`` gives an orthogonal layer, not a
    zero map. Other rank-deficient (or, for ``bjorck_iters``, too
    ill-conditioned) matrices cannot be orthogonalised: building the eval-mode
    cache (eval, no autograd) checks the orthogonalised matrices and emits a
    RuntimeWarning when they deviate from orthogonal by more than
    ``ORTHOGONALITY_WARN_TOL``; training-mode forwards are not checked (no
    device sync).
    """

    ORTHOGONALITY_WARN_TOL = 1e-3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True,
                 bjorck_iters: int = 20):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)
        self.bjorck_iters = _checks.int_in_range(bjorck_iters, "bjorck_iters", 1, linalg.MAX_BJORCK_ITERS)
        c_in, k = self._unshuffled
        c = max(c_in, self.out_channels)
        self.matrices = nn.Parameter(torch.empty(2 * (k - 1) + 1, c, c))
        for m in self.matrices.data:
            nn.init.orthogonal_(m)

    @property
    @in_full_float32
    def weight(self) -> torch.Tensor:
        """The orthogonal conv2d kernel (out, in * stride^2, k', k')."""
        return bcop_kernel(self.matrices, self.out_channels, self._unshuffled[0], self.bjorck_iters)

    def _eval_weight(self) -> torch.Tensor:
        """The kernel, and when it is built for the eval cache, a check of the orthogonalised matrices."""
        weight, ortho = _bcop_kernel(self.matrices, self.out_channels, self._unshuffled[0], self.bjorck_iters)
        if not (self.training or torch.is_grad_enabled() or torch.compiler.is_compiling()):
            eye = torch.eye(ortho.shape[-1], dtype=ortho.dtype, device=ortho.device)
            err = float((ortho.mT @ ortho - eye).abs().max())
            if not err <= self.ORTHOGONALITY_WARN_TOL:
                warnings.warn(f"BCOPConv2d: the orthogonalised matrices deviate from orthogonal by {err:.3g} "
                              f"(a rank-deficient matrix in `matrices`, or too few bjorck_iters="
                              f"{self.bjorck_iters}); the layer is not orthogonal", RuntimeWarning, stacklevel=3)
        return weight

    @autocast_layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare_input(x)
        weight = self._cached((x.device,), self._eval_weight)
        return self._add_bias(circular_conv2d(x, weight.to(x.dtype)))

