"""Losses for certified training of Lipschitz networks (docs/math.md §14.3)."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from .._precision import upcast

__all__ = ["OffsetCrossEntropy", "MarginHingeLoss", "margins"]


def _check_logits(logits: torch.Tensor, target: torch.Tensor) -> None:
    _checks.check_tensor(logits, "logits")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (batch, classes) with at least 2 classes, got shape {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor) or target.dtype != torch.int64 or target.shape != logits.shape[:1]:
        raise ValueError(f"target must be an int64 tensor of shape ({logits.shape[0]},), got "
                         f"{getattr(target, 'dtype', type(target).__name__)} {tuple(getattr(target, 'shape', ()))}")


def margins(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample, the true class's logit minus the largest other logit
    (negative when misclassified)."""
    _check_logits(logits, target)
    true = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf"))
    return true - others.amax(1)


class OffsetCrossEntropy(nn.Module):
    """``temperature * cross_entropy((logits - offset * onehot(target)) /
    temperature, target)``: cross-entropy on logits whose true-class entry is
    lowered by ``offset``, so it keeps pushing until the margin clears it.
    With ``offset = sqrt(2) * eps * L`` for a network of Lipschitz bound
    ``L``, a sample it drives past the offset is certified at radius ``eps``.
    The temperature scales the logits down (smaller: closer to a hinge) and
    the loss back up."""

    def __init__(self, offset: float, temperature: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.offset = _checks.nonnegative_float(offset, "offset")
        self.temperature = _checks.positive_float(temperature, "temperature")
        self.reduction = _reduction(reduction)

    def extra_repr(self) -> str:
        return f"offset={self.offset:g}, temperature={self.temperature:g}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = upcast(logits)  # float32 under autocast, as cross_entropy computes
        _check_logits(logits, target)
        shifted = logits.scatter_add(1, target[:, None], logits.new_full((logits.shape[0], 1), -self.offset))
        return self.temperature * nn.functional.cross_entropy(shifted / self.temperature, target,
                                                             reduction=self.reduction)


class MarginHingeLoss(nn.Module):
    """``relu(margin - (logit_target - max other logit))``: zero once a
    sample's margin reaches ``margin`` (``sqrt(2) * eps * L`` certifies radius
    ``eps``), linear below it."""

    def __init__(self, margin: float, reduction: str = "mean"):
        super().__init__()
        self.margin = _checks.nonnegative_float(margin, "margin")
        self.reduction = _reduction(reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = torch.relu(self.margin - margins(upcast(logits), target))
        return loss if self.reduction == "none" else getattr(loss, self.reduction)()


def _reduction(reduction) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction
