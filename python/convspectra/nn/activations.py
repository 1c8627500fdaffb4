"""Gradient-norm-preserving activations for 1-Lipschitz networks (Anil et
al. 2019): MaxMin and GroupSort sort groups of channels, so each is a
piecewise permutation of its input, 1-Lipschitz in the L2 norm."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks

__all__ = ["MaxMin", "GroupSort"]


def _channels(x: torch.Tensor, group_size: int, who: str) -> int:
    _checks.check_tensor(x, "x", _checks.FLOAT_DTYPES)  # a sort: exact in any float dtype
    if x.dim() < 2:
        raise ValueError(f"{who}: x must have a channel dimension (batch, channels, ...), got shape {tuple(x.shape)}")
    c = x.shape[1]
    if c % group_size:
        raise ValueError(f"{who}: x's channel count must be divisible by {group_size}, got {c} channels")
    return c


class MaxMin(nn.Module):
    """``[max(a, b), min(a, b)]`` for the two halves ``a, b`` of the channels
    (dim 1; channel ``c`` is paired with ``c + C/2``): GroupSort with groups of
    2, for any even channel count and input of shape (batch, C, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _channels(x, 2, "MaxMin")
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class GroupSort(nn.Module):
    """Sorts each group of ``group_size`` consecutive channels (dim 1) in
    descending order; the channel count must be divisible by ``group_size``.
    ``group_size=1`` is the identity; a group the size of the channels is
    FullSort."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = _checks.positive_int(group_size, "group_size")

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = _channels(x, self.group_size, "GroupSort")
        groups = x.reshape(x.shape[0], c // self.group_size, self.group_size, *x.shape[2:])
        return groups.sort(dim=2, descending=True).values.reshape(x.shape)
