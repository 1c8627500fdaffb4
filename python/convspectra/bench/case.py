"""The record of one benchmark case, and input makers the families share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

N_INPUT_SETS = 3  # random input sets per case, rotated between calls


@dataclass
class Case:
    """One row of the benchmark: ``ours`` and ``reference`` applied to the same
    inputs (one of ``make_inputs(device)``), each returning one tensor."""

    family: str
    name: str
    shape: str
    make_inputs: Callable[[torch.device], tuple]
    ours: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]
    bytes_moved: int  # the fewest bytes our kernel path must move (for GPU fractions)
    quick: bool = False  # one of its family's representative cases: in a default (and --quick) run
    direction: str = "forward"  # "forward", "backward" (timed alone) or "fwd+bwd"
    tol: float = 1e-4  # largest accepted relative difference of the two results
    # the textbook count of real floating-point operations of our kernel's work
    # (for the achieved fraction of the machine's float32 GEMM rate); None: not reported
    flops: int | None = None
    # part of a CPU run that does not name it with --family or --filter (False for cases
    # that take minutes on a small CPU, like whole-network training steps)
    default_on_cpu: bool = True


def random_weights(c_out: int, c_in: int, k: int) -> Callable[[torch.device], tuple]:
    """Input maker: N_INPUT_SETS He-scaled c_out x c_in x k x k kernels."""

    def make(device):
        return tuple(torch.randn(c_out, c_in, k, k, device=device) / (c_in * k * k) ** 0.5 for _ in range(N_INPUT_SETS))

    return make


def spectrum_bytes(c_out: int, c_in: int, n: int, s: int) -> int:
    """The half-grid symbol written and read once (complex64), plus the output."""
    ho = n // s
    freqs = ho * (ho // 2 + 1)
    return 2 * freqs * c_out * c_in * s * s * 8 + ho * ho * min(c_out, c_in * s * s) * 4


def forward_backward(fn, w: torch.Tensor) -> torch.Tensor:
    """fn(w), then the gradient of a fixed linear loss of it: forward + backward,
    both results flattened into one tensor."""
    w = w.detach().requires_grad_(True)
    y = fn(w)
    g = torch.linspace(0.5, 1.5, y.numel(), device=w.device, dtype=y.dtype).reshape(y.shape)
    (grad,) = torch.autograd.grad(y, w, g)
    return torch.cat([y.detach().flatten(), grad.flatten()])
