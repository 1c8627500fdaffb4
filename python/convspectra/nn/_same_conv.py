"""Stride-1 'same' convolutions with zero or circular padding, and their
adjoints, for the layers that need both directions (AOL, CPL, SLL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING_MODES = ("zeros", "circular")


def check_padding_mode(padding_mode) -> str:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


def same_pads(kh: int, kw: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of conv2d(padding='same')."""
    return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)


def conv_same(x: torch.Tensor, weight: torch.Tensor, padding_mode: str, bias: torch.Tensor | None = None):
    """The 'same' convolution of x with weight (out, in, kh, kw)."""
    mode = "constant" if padding_mode == "zeros" else "circular"
    return F.conv2d(F.pad(x, same_pads(*weight.shape[-2:]), mode=mode), weight, bias)


def conv_same_adjoint(y: torch.Tensor, weight: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """The adjoint of conv_same(., weight, padding_mode): the 'same'
    convolution with the transposed, flipped kernel, whose padding is the
    mirror image of the forward's."""
    kh, kw = weight.shape[-2:]
    left, right, top, bottom = same_pads(kh, kw)
    mode = "constant" if padding_mode == "zeros" else "circular"
    return F.conv2d(F.pad(y, (right, left, bottom, top), mode=mode), weight.transpose(0, 1).flip(2, 3))
