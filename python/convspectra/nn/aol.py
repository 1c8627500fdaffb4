"""Almost-orthogonal convolutions (Prach & Lampert 2022, docs/math.md §14.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks
from .._precision import autocast_layer, in_full_float32
from ._eval_cache import EvalCached
from ._same_conv import check_padding_mode, conv_same

__all__ = ["AOLConv2d", "aol_rescale"]

AOL_EPS = 1e-6


@in_full_float32
def aol_rescale(weight: torch.Tensor, eps: float = AOL_EPS) -> torch.Tensor:
    """``weight * d`` per input channel, ``d_i = (sum_j sum_taps |(K^T * K)_ij|
    + eps)^{-1/2}`` with ``K^T * K`` the (in, in, 2kh-1, 2kw-1) kernel of
    ``T^T T``: a convolution of operator norm at most 1 with any zero or
    circular padding (docs/math.md §14.5)."""
    _checks.check_weight(weight)
    kh, kw = weight.shape[-2:]
    kt = weight.transpose(0, 1)  # the input channels as a batch, correlated over the output channels
    gram = F.conv2d(kt, kt, padding=(kh - 1, kw - 1))
    d = torch.rsqrt(gram.abs().sum((1, 2, 3)) + eps)
    return weight * d[None, :, None, None]


class AOLConv2d(EvalCached):
    """A 1-Lipschitz 'same' convolution (stride 1) with the kernel
    ``aol_rescale(weight)``: ``padding_mode`` 'zeros' or 'circular'. The
    weight starts as an orthogonal matrix at the centre tap (on which the
    rescaling is the identity when out_channels >= in_channels); in eval mode
    the rescaled kernel is cached."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 padding_mode: str = "zeros"):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.kernel_size = _checks.positive_int(kernel_size, "kernel_size")
        self.padding_mode = check_padding_mode(padding_mode)
        k = self.kernel_size
        self.weight = nn.Parameter(torch.zeros(self.out_channels, self.in_channels, k, k))
        with torch.no_grad():
            nn.init.orthogonal_(self.weight[:, :, (k - 1) // 2, (k - 1) // 2])
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if _checks.check_bool(bias, "bias") else None

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}, padding_mode={self.padding_mode!r}")

    @in_full_float32
    def rescaled_weight(self) -> torch.Tensor:
        return aol_rescale(self.weight)

    @autocast_layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.in_channels)
        weight = self._cached((x.device,), self.rescaled_weight)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return conv_same(x, weight.to(x.dtype), self.padding_mode, bias)


def _check_images(x: torch.Tensor, channels: int) -> None:
    _checks.check_tensor(x, "x")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"x must be (batch, {channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have non-zero H and W, got {tuple(x.shape[-2:])}")
