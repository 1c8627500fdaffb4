"""Skew orthogonal convolutions (Singla & Feizi 2021, docs/math.md §14.7)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks
from .._precision import autocast_layer, in_full_float32
from ._eval_cache import EvalCached

__all__ = ["SOCConv2d"]

# ||L|| is scaled to this fraction of the smallest of the four reshape norms (the published value; 1 for k = 1)
SOC_CORRECTION = 0.7
MAX_SOC_TERMS = 100


def skew_kernel(M: torch.Tensor) -> torch.Tensor:
    """0.5 (M - M^T) with M^T the kernel of the adjoint of the zero-padded
    'same' convolution: channels swapped and taps flipped."""
    return 0.5 * (M - M.transpose(0, 1).flip(2, 3))


def reshapes(L: torch.Tensor) -> list[torch.Tensor]:
    """L's four reshapes (c_out kh x c_in kw, c_out kw x c_in kh, c_out x c_in
    kh kw, c_in x c_out kh kw) whose smallest spectral norm scales the series."""
    c_out, c_in, kh, kw = L.shape
    return [L.permute(0, 2, 1, 3).reshape(c_out * kh, c_in * kw), L.permute(0, 3, 1, 2).reshape(c_out * kw, c_in * kh),
            L.reshape(c_out, c_in * kh * kw), L.transpose(0, 1).reshape(c_in, c_out * kh * kw)]


# power-iteration steps on each reshape: at construction, and per training forward (as published)
INIT_POWER_ITERS = 50
TRAIN_POWER_ITERS = 1


class SOCConv2d(EvalCached):
    """``y = exp(L) x + bias``, truncated: the exponential of the
    skew-symmetric zero-padded 'same' convolution with kernel
    ``L = c (M - M^T) / (2 s)`` (``s`` the smallest of four reshapes' spectral
    norms by persistent power iteration, 50 steps at construction and one per
    training forward as published, 50 when the eval-mode kernel is built;
    ``c = 0.7``, or 1 for k = 1), as the
    series ``sum_{i <= terms} L^i x / i!`` (``terms`` in training,
    ``eval_terms`` in eval mode, 5 and 12 as published). The
    exact exponential is orthogonal; the truncated series deviates from it by
    at most ``sum_{i > terms} ||L||^i / i!`` (docs/math.md §14.7), which
    ``cs.lipschitz_bound`` adds to 1 with a certified bound of ``||L||``.
    Measured on the dense operator (float64, c <= 8, n <= 8, random ``M``):
    the eval-mode series is orthogonal to 2e-9, the 5-term training series
    has singular values up to 1.002 (about 1e-3 above 1: not 1-Lipschitz
    during training, as published).

    ``M`` is ``(C, C, k, k)`` with ``C = max(out, in * stride^2)`` and an odd
    ``k``; ``stride=s`` is pixel unshuffle first; inputs with fewer than C
    channels are zero-padded and the first ``out`` output channels kept.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True,
                 terms: int = 5, eval_terms: int = 12):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.kernel_size = _checks.positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (an even 'same' convolution is not skew), got {kernel_size}")
        self.stride = _checks.positive_int(stride, "stride")
        self.terms = _checks.int_in_range(terms, "terms", 1, MAX_SOC_TERMS)
        self.eval_terms = _checks.int_in_range(eval_terms, "eval_terms", 1, MAX_SOC_TERMS)
        c = max(self.out_channels, self.in_channels * self.stride**2)
        k = self.kernel_size
        self.M = nn.Parameter(torch.randn(c, c, k, k) / math.sqrt(c))
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if _checks.check_bool(bias, "bias") else None
        # persistent power-iteration vectors of the four reshapes (buffers: saved, moved with the module)
        for i, A in enumerate(reshapes(skew_kernel(self.M.detach()))):
            self.register_buffer(f"_u{i}", nn.functional.normalize(torch.randn(A.shape[0]), dim=0))
            self.register_buffer(f"_v{i}", nn.functional.normalize(torch.randn(A.shape[1]), dim=0))
        self._power_steps(skew_kernel(self.M.detach()), INIT_POWER_ITERS)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"bias={self.bias is not None}, terms={self.terms}, eval_terms={self.eval_terms}")

    @torch.no_grad()
    def _power_steps(self, L: torch.Tensor, steps: int) -> None:
        for i, A in enumerate(reshapes(L)):
            u, v = getattr(self, f"_u{i}"), getattr(self, f"_v{i}")
            A = A.to(u.dtype)
            for _ in range(steps):
                v.copy_(nn.functional.normalize(A.mT @ u, dim=0, eps=1e-12))
                u.copy_(nn.functional.normalize(A @ v, dim=0, eps=1e-12))

    @in_full_float32
    def reshape_norm(self, L: torch.Tensor) -> torch.Tensor:
        """The smallest of the four reshapes' power-iteration estimates
        |u^T A v| (differentiable in L, the vectors held fixed), each at least
        ||A||_F / sqrt(min side), a true lower bound of ||A||: stale vectors
        (a weight set by hand) cannot make the scale collapse. Without the
        sqrt(kh kw) factor of Singla & Feizi's bound it is not an upper bound
        of the operator norm: it only sets the series' scale."""
        estimates = []
        for i, A in enumerate(reshapes(L)):
            # clones: a later training forward updates the buffers in place, after autograd saved these
            u, v = getattr(self, f"_u{i}").to(L.dtype).clone(), getattr(self, f"_v{i}").to(L.dtype).clone()
            floor = torch.linalg.matrix_norm(A) / min(A.shape) ** 0.5
            estimates.append(torch.maximum((u @ A @ v).abs(), floor))
        return torch.stack(estimates).amin()

    @in_full_float32
    def skew_weight(self) -> torch.Tensor:
        """The scaled skew kernel L of the series: in training after one
        power-iteration step per call (as published); otherwise (eval, export,
        bounds) after INIT_POWER_ITERS steps from the stored vectors, so that
        a weight loaded or set by hand is scaled by its own norms."""
        L = skew_kernel(self.M)
        self._power_steps(L.detach(), TRAIN_POWER_ITERS if self.training else INIT_POWER_ITERS)
        s = self.reshape_norm(L)
        c = SOC_CORRECTION if self.kernel_size > 1 else 1.0
        return c * L / torch.where(s > 0, s, torch.ones_like(s))

    def series_terms(self) -> int:
        return self.terms if self.training else self.eval_terms

    @autocast_layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.check_tensor(x, "x")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (batch, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        s = self.stride
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(f"x's H and W must be divisible by the stride {s}, got {tuple(x.shape[-2:])}")
        if s > 1:
            x = F.pixel_unshuffle(x, s)
        L = self._cached((x.device,), self.skew_weight).to(x.dtype)
        if x.shape[1] < L.shape[0]:
            x = F.pad(x, (0, 0, 0, 0, 0, L.shape[0] - x.shape[1]))
        y = _exp_series(x, L, self.series_terms())[:, : self.out_channels]
        return y if self.bias is None else y + self.bias.to(x.dtype)[:, None, None]


def _exp_series(x: torch.Tensor, L: torch.Tensor, terms: int) -> torch.Tensor:
    p = L.shape[-1] // 2
    term, total = x, x
    for i in range(1, terms + 1):
        term = F.conv2d(term, L, padding=p) / i
        total = total + term
    return total


def series_remainder(norm: torch.Tensor, terms: int) -> torch.Tensor:
    """An upper bound of sum_{i > terms} norm^i / i! (how far the truncated
    exponential of an operator of norm ``norm`` can be from the exponential),
    summed term by term in float64 (no cancellation), then the geometric bound
    of the rest."""
    x = norm.to(torch.float64)
    term = torch.ones_like(x)
    for i in range(1, terms + 1):
        term = term * x / i
    tail = torch.zeros_like(x)
    for i in range(terms + 1, terms + 61):
        term = term * x / i
        tail = tail + term
    ratio = x / (terms + 61)  # term is x^(T+60)/(T+60)!: every later one is at most this times the one before
    return tail + term * ratio / torch.clamp_min(1 - ratio, 1e-300)
