"""Layers and regularisers built on the spectra."""

from __future__ import annotations

import math
import warnings
import weakref

import torch
from torch import nn

from . import _checks, linalg
from .spectrum import NORM_METHODS, _zero_padded_norm, _norm_options, spectral_norm

__all__ = ["CayleyConv2d", "BCOPConv2d", "bcop_kernel", "circular_conv2d", "spectral_penalty", "conv_input_sizes"]

# module -> {(in_channels, H, W): (ids of its Conv2d layers, {conv id: (H, W)})}, dropped with
# the module. Ids, not the layers: a module that is itself a Conv2d would keep its own key alive;
# and a changed set of layers is recorded anew.
_size_cache: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def conv_input_sizes(module: nn.Module, input_size, in_channels: int | None = None) -> dict[nn.Conv2d, tuple[int, int]]:
    """The spatial input size of every ``nn.Conv2d`` in ``module`` for an input
    of spatial size ``input_size``, recorded by one forward pass of a zero
    batch in eval mode (so batch-norm statistics do not move), cached per module
    and size. ``in_channels`` defaults to that of the first Conv2d."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return {}
    H, W = _checks.input_size_pair(input_size, torch.empty(1, 1, 1, 1))
    c_in = convs[0].in_channels if in_channels is None else _checks.positive_int(in_channels, "in_channels")
    key, ids = (c_in, H, W), tuple(id(conv) for conv in convs)
    cached = _size_cache.setdefault(module, {})
    if key not in cached or cached[key][0] != ids:
        sizes: dict[int, tuple[int, int]] = {}

        def record(conv, args):  # returns None: a pre-hook's return value would replace the input
            sizes.setdefault(id(conv), tuple(args[0].shape[-2:]))

        hooks = [conv.register_forward_pre_hook(record) for conv in convs]
        modes = {m: m.training for m in module.modules()}
        p = convs[0].weight
        try:
            module.eval()
            with torch.no_grad():
                module(torch.zeros(1, c_in, H, W, dtype=p.dtype, device=p.device))
        finally:
            for h in hooks:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        cached[key] = (ids, sizes)
    sizes = cached[key][1]
    return {conv: sizes[id(conv)] for conv in convs if id(conv) in sizes}  # layers the forward never ran: none


def _effective_kernel(conv: nn.Conv2d, weight: torch.Tensor) -> torch.Tensor:
    """The kernel with its dilation spelt out as zero taps."""
    dh, dw = conv.dilation
    if (dh, dw) == (1, 1):
        return weight
    c_out, c_in, kh, kw = weight.shape
    out = weight.new_zeros(c_out, c_in, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out[:, :, ::dh, ::dw] = weight
    return out


def _conv_padding(conv: nn.Conv2d, kh: int, kw: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of conv for its effective (dilated) kernel kh x kw."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":  # as conv2d(padding="same"): the odd one out after
        return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def _layer_norm(conv: nn.Conv2d, w: torch.Tensor, H: int, W: int, method: str, norm_kwargs) -> torch.Tensor:
    """A bound (or with method="exact", the value) of the norm of conv's
    stride-1 operator with kernel w (one group, dilation spelt out) on H x W
    inputs, with the layer's own padding amount and mode."""
    kh, kw = w.shape[-2:]
    pads = _conv_padding(conv, kh, kw)
    same = pads == ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    if conv.padding_mode == "circular":
        # the same operator on the input's own grid; another padding amount keeps
        # rows of that circulant (fewer outputs) or repeats them (more): the
        # norm grows by at most the square root of the largest repeat count
        rows, cols = H + pads[2] + pads[3] - kh + 1, W + pads[0] + pads[1] - kw + 1
        repeats = 1 if same else math.ceil(rows / H) * math.ceil(cols / W)
        return repeats**0.5 * spectral_norm(_fold_kernel(w, H, W), (H, W), "circular", method, **norm_kwargs)
    if method == "exact":  # the true operator, whatever its padding
        tol, max_iter, _ = _norm_options(**norm_kwargs)  # spectral_norm's own checks
        return _zero_padded_norm(w, H, W, tol, max_iter, pads)
    # every zero padding amount gives rows of the full convolution (or zero rows): the
    # bounds of the layer on an input as large as the kernel hold for all of them
    return spectral_norm(w, (max(H, kh), max(W, kw)), "zeros", method, **norm_kwargs)


def spectral_penalty(
    module: nn.Module,
    input_size,
    method: str = "gram",
    *,
    in_channels: int | None = None,
    target: float | None = None,
    **norm_kwargs,
) -> torch.Tensor:
    """A differentiable bound of the spectral norm of every ``nn.Conv2d`` in
    ``module``, summed: a regulariser to add to a loss.

    Each layer is bounded at the input size it actually sees (recorded once
    with ``conv_input_sizes``) with ``cs.spectral_norm(method=...)``, its own
    padding mode ('zeros' or 'circular') and padding amount: zero padding of
    any amount is bounded by the bounds of the full convolution, and
    ``method="exact"`` runs Lanczos on the layer's true operator; a circular
    layer whose padding is not 'same' (more or fewer outputs than inputs) by
    the circulant's norm times the square root of how often an output row
    repeats (an upper bound, also for "exact"). A strided layer is bounded by its
    stride-1 norm (subsampling the output cannot increase it); a grouped layer
    by the largest of its groups' norms; dilation is spelt out as zero taps.
    With ``target``, each layer contributes ``relu(norm - target)`` instead,
    penalising only what exceeds it. Extra keyword arguments go to
    ``spectral_norm`` (e.g. ``steps`` for Gram iteration). Its derivatives are
    those of ``spectral_norm``: double backward works except for
    ``method="exact"`` on a zero-padded layer, which raises.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if method not in NORM_METHODS:
        raise ValueError(f"method must be one of {NORM_METHODS}, got {method!r}")
    if target is not None:
        target = _checks.positive_float(target, "target")
    sizes = conv_input_sizes(module, input_size, in_channels)
    total = None
    for conv, (H, W) in sizes.items():
        if conv.padding_mode not in _checks.PADDINGS:
            raise ValueError(f"spectral_penalty: layer {conv} has padding_mode={conv.padding_mode!r}; "
                             "only 'zeros' and 'circular' are supported")
        weight = _effective_kernel(conv, conv.weight)
        per_group = weight.shape[0] // conv.groups
        norm = None
        for g in range(conv.groups):
            n = _layer_norm(conv, weight[g * per_group : (g + 1) * per_group], H, W, method, norm_kwargs)
            norm = n if norm is None else torch.maximum(norm, n)
        term = norm if target is None else torch.relu(norm - target)
        total = term if total is None else total + term
    if total is None:
        p = next(module.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return total


class _OrthogonalConv2d(nn.Module):
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
        self._cache: dict = {}

    @property
    def _unshuffled(self) -> tuple[int, int]:
        """(channels, kernel size) of the stride-1 layer after pixel unshuffle."""
        return self.in_channels * self.stride**2, max(1, math.ceil(self.kernel_size / self.stride))

    def extra_repr(self) -> str:
        k = self.kernel_size
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=({k}, {k}), stride=({self.stride}, "
                f"{self.stride}), bias={self.bias is not None}")

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

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

    def _cached(self, key, compute):
        """compute(), or in eval mode without autograd its cached value for key."""
        if self.training or torch.is_grad_enabled():
            return compute()
        versions = tuple((p.data_ptr(), p._version) for p in self.parameters() if p is not self.bias)
        cached = self._cache.get(key)
        if cached is None or cached[0] != versions:
            cached = (versions, compute())
            self._cache[key] = cached
        return cached[1]

    def _add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None, None]


class CayleyConv2d(_OrthogonalConv2d):
    """Orthogonal circular convolution by the Cayley transform (Trockman &
    Kolter 2021, MATH.md 5).

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
        F = torch.fft.rfft2(w.to(dtype), s=(H, W)).permute(2, 3, 0, 1)
        return linalg.cayley(F.contiguous())

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


def bcop_kernel(matrices: torch.Tensor, out_channels: int, in_channels: int, iters: int = 20) -> torch.Tensor:
    """The BCOP kernel (Li et al. 2019, MATH.md 6): an ``(out, in, k, k)`` conv
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


def _fold_kernel(weight: torch.Tensor, H: int, W: int) -> torch.Tensor:
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
    folded = _fold_kernel(weight, H, W)

    def pads(k, n):  # (before, after) along one axis; a folded axis' tap j acts at offset j
        return (0, n - 1) if k > n else (k // 2, (k - 1) // 2)

    return nn.functional.conv2d(nn.functional.pad(x, pads(kw, W) + pads(kh, H), mode="circular"), folded)


class BCOPConv2d(_OrthogonalConv2d):
    """Orthogonal circular convolution by Block Convolution Orthogonal
    Parameterization (Li et al. 2019, MATH.md 6).

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
    def weight(self) -> torch.Tensor:
        """The orthogonal conv2d kernel (out, in * stride^2, k', k')."""
        return bcop_kernel(self.matrices, self.out_channels, self._unshuffled[0], self.bjorck_iters)

    def _eval_weight(self) -> torch.Tensor:
        """The kernel, and when it is built for the eval cache, a check of the orthogonalised matrices."""
        weight, ortho = _bcop_kernel(self.matrices, self.out_channels, self._unshuffled[0], self.bjorck_iters)
        if not (self.training or torch.is_grad_enabled()):
            eye = torch.eye(ortho.shape[-1], dtype=ortho.dtype, device=ortho.device)
            err = float((ortho.mT @ ortho - eye).abs().max())
            if not err <= self.ORTHOGONALITY_WARN_TOL:
                warnings.warn(f"BCOPConv2d: the orthogonalised matrices deviate from orthogonal by {err:.3g} "
                              f"(a rank-deficient matrix in `matrices`, or too few bjorck_iters="
                              f"{self.bjorck_iters}); the layer is not orthogonal", RuntimeWarning, stacklevel=3)
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare_input(x)
        weight = self._cached((x.device,), self._eval_weight)
        return self._add_bias(circular_conv2d(x, weight.to(x.dtype)))
