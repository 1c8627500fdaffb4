"""The residual wrapper whose Lipschitz bound is known from its branch's."""

from __future__ import annotations

import math
import numbers

from torch import nn

__all__ = ["Residual"]


class Residual(nn.Module):
    """``x + scale * f(x)``: a ResNet block whose Lipschitz constant is at most
    ``1 + |scale| L(f)`` (``cs.lipschitz_bound`` composes it so). ``f`` must
    map its input to the same shape."""

    def __init__(self, f: nn.Module, scale: float = 1.0):
        super().__init__()
        if not isinstance(f, nn.Module):
            raise TypeError(f"f must be a torch.nn.Module, got {type(f).__name__}")
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
            raise TypeError(f"scale must be a finite real number, got {scale!r}")
        self.f = f
        self.scale = float(scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"

    def forward(self, x):
        y = self.f(x)
        if y.shape != x.shape:
            raise ValueError(f"Residual: f must keep the shape of its input, got {tuple(x.shape)} -> {tuple(y.shape)}")
        return x + self.scale * y
