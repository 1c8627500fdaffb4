"""Residual 1-Lipschitz layers from convex potentials: CPL (Meunier et al.
2022) and SLL (Araujo et al. 2023), docs/math.md §14.6.

Both are ``y = x - W D relu(W^T x + b)`` with ``W^T`` a 'same' convolution
from ``channels`` to ``inner_channels`` and ``W`` its adjoint: a gradient step
on a convex potential, 1-Lipschitz when ``D <= 2 (W^T W)^{-1}``. CPL takes
``D = 2 / h^2`` with ``h`` a certified upper bound of ``||W||`` at the input
size (the published layer uses one power-iteration step per training step,
which can fall below the norm); SLL the diagonal ``D = 2 T^{-1}`` with ``T``
from the Schur test on ``|W^T W|``, for any input size.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from .._precision import autocast_layer, in_full_float32
from ..norms import spectral_norm
from ._eval_cache import EvalCached
from ._same_conv import check_padding_mode, conv_same, conv_same_adjoint
from .aol import _check_images
from .layers import fold_kernel

__all__ = ["CPLConv2d", "SLLConv2d"]


class _ConvexPotentialConv2d(EvalCached):
    def __init__(self, channels: int, inner_channels: int, kernel_size: int, bias: bool, padding_mode: str):
        super().__init__()
        self.channels = _checks.positive_int(channels, "channels")
        self.inner_channels = _checks.positive_int(inner_channels, "inner_channels")
        self.kernel_size = _checks.positive_int(kernel_size, "kernel_size")
        self.padding_mode = check_padding_mode(padding_mode)
        k = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.inner_channels, self.channels, k, k))
        nn.init.xavier_normal_(self.weight)
        fan_in = self.channels * k * k
        self.bias = nn.Parameter(torch.empty(self.inner_channels).uniform_(-fan_in**-0.5, fan_in**-0.5)) \
            if _checks.check_bool(bias, "bias") else None

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out_channels(self) -> int:
        return self.channels

    def extra_repr(self) -> str:
        return (f"{self.channels}, inner_channels={self.inner_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}, padding_mode={self.padding_mode!r}")

    def _step(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x - W (scale * relu(W^T x + b)), scale broadcast over the inner channels."""
        w = self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        z = torch.relu(conv_same(x, w, self.padding_mode, bias))
        return x - conv_same_adjoint(scale.to(x.dtype) * z, w, self.padding_mode)


class CPLConv2d(_ConvexPotentialConv2d):
    """Convex potential layer (Meunier et al. 2022): ``y = x - 2 / h^2 W
    relu(W^T x + b)`` with ``W^T`` the 'same' convolution (``padding_mode``
    'zeros' or 'circular') by ``weight`` (inner_channels, channels, k, k) and
    ``h`` a certified upper bound of its norm at the input's size:
    ``cs.spectral_norm(..., method="certified")`` (for circular padding, the
    exact norm), differentiable, recomputed every training step and cached
    per input size in eval mode. Maps ``channels`` to ``channels`` at the
    same size, 1-Lipschitz by construction. The certified norm makes a
    ConvNet-XS training step about 18 % slower than the published single
    power-iteration step does (bench/NOTES.md, "The layer benchmark")."""

    def __init__(self, channels: int, inner_channels: int, kernel_size: int, bias: bool = True,
                 padding_mode: str = "zeros"):
        super().__init__(channels, inner_channels, kernel_size, bias, padding_mode)

    @in_full_float32
    def weight_norm(self, H: int, W: int) -> torch.Tensor:
        """The certified upper bound h of ||W|| on H x W inputs."""
        kh, kw = self.weight.shape[-2:]
        if self.padding_mode == "circular":
            return spectral_norm(fold_kernel(self.weight, H, W), (H, W), "circular", "exact")
        return spectral_norm(self.weight, (max(H, kh), max(W, kw)), "zeros", "certified")

    @in_full_float32
    def step_size(self, H: int, W: int) -> torch.Tensor:
        """2 / h^2 (0 for a zero kernel, whose layer is the identity)."""
        h2 = self.weight_norm(H, W).square()
        return torch.where(h2 > 0, 2 / torch.where(h2 > 0, h2, torch.ones_like(h2)), torch.zeros_like(h2))

    @autocast_layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.channels)
        H, W = x.shape[-2:]
        t = self._cached((H, W, x.device), lambda: self.step_size(H, W))
        return self._step(x, t)


class SLLConv2d(_ConvexPotentialConv2d):
    """SDP-based Lipschitz layer (Araujo et al. 2023): ``y = x - 2 W T^{-1}
    relu(W^T x + b)`` with ``W^T`` the 'same' convolution by ``weight``
    (inner_channels, channels, k, k) and ``T = diag(sum_j |W^T W|_ij q_j /
    q_i)`` over the inner channels, ``|W^T W|`` summed over the taps of its
    (2k-1) x (2k-1) kernel and ``q = exp(log_q)`` trainable: ``T >= W^T W``
    for every input size and both paddings, so the layer is 1-Lipschitz. In
    eval mode ``T^{-1}`` is cached. (The published conv layer indexes both
    ``q`` factors along the same axis, so that its ``q`` cancels; here ``q_j``
    weights the column, as in its linear layer and in the paper.)"""

    def __init__(self, channels: int, inner_channels: int, kernel_size: int, bias: bool = True,
                 padding_mode: str = "zeros"):
        super().__init__(channels, inner_channels, kernel_size, bias, padding_mode)
        self.log_q = nn.Parameter(torch.zeros(self.inner_channels))

    @in_full_float32
    def inverse_t(self) -> torch.Tensor:
        """T^{-1} per inner channel (0 where T is 0: a zero filter, unused)."""
        k = self.weight.shape[-2:]
        gram = nn.functional.conv2d(self.weight, self.weight, padding=(k[0] - 1, k[1] - 1)).abs().sum((2, 3))
        q = torch.exp(self.log_q)
        T = (gram * q[None, :]).sum(1) / q
        return torch.where(T > 0, 1 / torch.where(T > 0, T, torch.ones_like(T)), torch.zeros_like(T))

    @autocast_layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.channels)
        t = self._cached((x.device,), self.inverse_t)
        return self._step(x, 2 * t[:, None, None])
