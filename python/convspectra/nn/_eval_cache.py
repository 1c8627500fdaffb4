"""The eval-mode cache the orthogonal layers share."""

from __future__ import annotations

import torch
from torch import nn


class EvalCached(nn.Module):
    """A module that, in eval mode without autograd, caches whatever its
    parameters (bar ``bias``) determine, and drops it when a parameter changes
    or the module returns to train(). Copies and pickles carry no cache."""

    def __init__(self):
        super().__init__()
        self._cache: dict = {}

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_cache"] = {}
        return state

    def _cached(self, key, compute):
        """compute(), or in eval mode without autograd its cached value for key.
        torch.compile computes it in the graph instead (a traced graph cannot
        compare storage pointers and versions)."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()
        bias = getattr(self, "bias", None)
        versions = tuple((p.data_ptr(), p._version) for p in self.parameters() if p is not bias)
        cached = self._cache.get(key)
        if cached is None or cached[0] != versions:
            cached = (versions, compute())
            self._cache[key] = cached
        return cached[1]
