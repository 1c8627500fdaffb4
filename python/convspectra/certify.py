"""Certified robustness from a Lipschitz bound (docs/math.md §14.3), and the
projected-gradient L2 attack that checks it."""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _checks
from ._precision import in_full_float32
from .lipschitz import lipschitz_bound
from .nn.losses import margins

__all__ = ["certified_radius", "certified_accuracy", "pgd_l2"]


def _check_lipschitz(lipschitz) -> torch.Tensor | float:
    if isinstance(lipschitz, torch.Tensor):
        if lipschitz.numel() != 1 or not bool(torch.isfinite(lipschitz).all() and (lipschitz > 0).all()):
            raise ValueError(f"lipschitz must be one positive finite number, got {lipschitz}")
        return lipschitz.reshape(())
    return _checks.positive_float(lipschitz, "lipschitz")


def certified_radius(logits: torch.Tensor, lipschitz, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the L2 radius within which the prediction cannot change:
    the margin between the top logit and the runner-up over ``sqrt(2) *
    lipschitz``, for a network whose logits are ``lipschitz``-Lipschitz (a
    perturbation of norm r moves the difference of two logits by at most
    ``sqrt(2) L r``). With ``labels``, the margin of the labelled class over
    the best other one, and 0 for a misclassified sample."""
    L = _check_lipschitz(lipschitz)
    _checks.check_tensor(logits, "logits")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (batch, classes) with at least 2 classes, got shape {tuple(logits.shape)}")
    if labels is None:
        top2 = logits.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    else:
        margin = margins(logits, labels).clamp_min(0)
    return margin / (math.sqrt(2) * L)


@torch.no_grad()
@in_full_float32
def certified_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, lipschitz=None, *,
                       batch_size: int = 1024) -> float:
    """The fraction of samples that are classified correctly and certified at
    L2 radius ``eps``: ``certified_radius(model(x), L, y) > eps``, in eval
    mode. ``lipschitz=None`` computes ``L = cs.lipschitz_bound(model, ...)``
    at x's size and channels (or for flat 2-D x, from the first linear
    layer)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _checks.check_tensor(x, "x")
    eps = _checks.nonnegative_float(eps, "eps")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        raise ValueError(f"y must be a tensor of {x.shape[0]} labels, got {getattr(y, 'shape', type(y).__name__)}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one sample")
    if lipschitz is None:
        if x.dim() == 4:
            lipschitz = lipschitz_bound(model, tuple(x.shape[-2:]), in_channels=x.shape[1])
        else:
            lipschitz = lipschitz_bound(model, None)
    L = _check_lipschitz(lipschitz)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        certified = 0
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            certified += int((certified_radius(model(xb), L, yb) > eps).sum())
    finally:
        for m, mode in modes.items():
            m.training = mode
    return certified / x.shape[0]


@in_full_float32
def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 50,
           step_size: float | None = None, *, restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """A projected-gradient attack in the L2 ball of radius ``eps`` around
    each sample (eval mode): ``steps`` normalised gradient steps of size
    ``step_size`` (default ``2.5 eps / steps``) on the margin of the best
    other class over the true one, each projected back onto the ball; of
    ``restarts`` random starts, the perturbation with the lowest margin per
    sample. Returns the perturbed inputs. The input domain is not clipped: a
    certificate holds for every perturbation of norm up to eps."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _checks.check_tensor(x, "x")
    eps = _checks.positive_float(eps, "eps")
    steps = _checks.int_in_range(steps, "steps", 1, 100_000)
    restarts = _checks.positive_int(restarts, "restarts")
    step = 2.5 * eps / steps if step_size is None else _checks.positive_float(step_size, "step_size")
    x = x.detach()
    gen = torch.Generator().manual_seed(seed)

    def per_sample_norm(t):
        return torch.linalg.vector_norm(t.flatten(1), dim=1).clamp_min(1e-30).view(-1, *[1] * (t.dim() - 1))

    def project(delta):
        return delta * torch.clamp(eps / per_sample_norm(delta), max=1.0)

    modes = {m: m.training for m in model.modules()}
    best, best_margin = x.clone(), None
    try:
        model.eval()
        for _ in range(restarts):
            delta = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
            delta = project(0.5 * eps * delta / per_sample_norm(delta))
            for _ in range(steps):
                delta.requires_grad_(True)
                with torch.enable_grad():
                    loss = -margins(model(x + delta), y).sum()
                    (g,) = torch.autograd.grad(loss, delta)
                delta = project(delta.detach() + step * g / per_sample_norm(g))
            with torch.no_grad():
                m = margins(model(x + delta), y)
            if best_margin is None:
                best, best_margin = x + delta, m
            else:
                better = m < best_margin
                best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x + delta, best)
                best_margin = torch.minimum(m, best_margin)
    finally:
        for mod, mode in modes.items():
            mod.training = mode
    return best.detach()
