"""An orthogonal linear layer on the fused matrix ops."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks, linalg
from .._precision import autocast_layer, in_full_float32
from ._eval_cache import EvalCached

__all__ = ["OrthogonalLinear"]

LINEAR_METHODS = ("cayley", "bjorck")


class OrthogonalLinear(EvalCached):
    """``y = Q x + bias`` with ``Q`` (out_features x in_features) having
    orthonormal rows (out < in) or columns (out >= in): an isometry or a
    co-isometry, 1-Lipschitz.

    ``method="cayley"``: ``Q = cs.linalg.cayley(weight)`` (exact to rounding
    for any weight); ``"bjorck"``: ``Q = cs.linalg.bjorck(weight,
    bjorck_iters)`` (the polar factor, to Bjorck's convergence; a
    rank-deficient weight is not made orthogonal). In eval mode without
    autograd ``Q`` is cached and rebuilt when the weight changes.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, method: str = "cayley",
                 bjorck_iters: int = 20):
        super().__init__()
        self.in_features = _checks.positive_int(in_features, "in_features")
        self.out_features = _checks.positive_int(out_features, "out_features")
        if method not in LINEAR_METHODS:
            raise ValueError(f"method must be one of {LINEAR_METHODS}, got {method!r}")
        self.method = method
        self.bjorck_iters = _checks.int_in_range(bjorck_iters, "bjorck_iters", 1, linalg.MAX_BJORCK_ITERS)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        nn.init.orthogonal_(self.weight)
        if method == "cayley":
            # the Cayley map of a small matrix is near the identity's corner: an orthogonal start
            self.weight.data *= 0.5
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if _checks.check_bool(bias, "bias") else None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"method={self.method!r}")

    @in_full_float32
    def orthogonal_weight(self) -> torch.Tensor:
        """Q, (out_features, in_features)."""
        if self.method == "cayley":
            return linalg.cayley(self.weight)
        return linalg.bjorck(self.weight, self.bjorck_iters)

    @autocast_layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.check_tensor(x, "x")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features in its last dimension, got shape "
                             f"{tuple(x.shape)}")
        Q = self._cached((x.device,), self.orthogonal_weight)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, Q.to(x.dtype), bias)
