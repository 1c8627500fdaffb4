"""One case measured: both implementations on the same inputs, their medians,
peak memory and the relative difference of their results."""

from __future__ import annotations

import torch

from .case import Case
from .report import ROW_KEYS
from .timing import ResidentPeakMemory, peak_bytes, time_ms


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in double precision on the CPU; complex tensors are
    compared as complex (both parts), not cast to real."""
    a, b = (t.detach().cpu() for t in (a, b))
    dtype = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
    a, b = a.to(dtype), b.to(dtype)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def _rotating(fn, inputs):
    """A call of fn on the next of the input sets, in turn."""
    state = {"i": 0}

    def call():
        x = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        return fn(x)

    return call


def _backward_runner(fn, inputs, device):
    """Times the backward alone: graphs are built once, then replayed."""
    outs = []
    for w in inputs:
        y = fn(w)
        outs.append((y, torch.linspace(0.5, 1.5, y.numel(), device=device, dtype=y.dtype).reshape(y.shape), w))
    state = {"i": 0}

    def call():
        y, g, w = outs[state["i"] % len(outs)]
        state["i"] += 1
        return torch.autograd.grad(y, w, g, retain_graph=True)[0]

    return call


def run_case(case: Case, device, min_run_time: float, cpu_memory: ResidentPeakMemory | None = None,
             bandwidth: float | None = None, flop_rate: float | None = None) -> dict:
    """The row of one case (keys: ROW_KEYS, in that order). ``bandwidth``: the
    device's copy bandwidth in bytes/s, for the achieved fraction (GPU rows);
    ``flop_rate``: its float32 GEMM rate in FLOP/s, for cases that count flops."""
    device = torch.device(device)
    cpu_memory = cpu_memory or ResidentPeakMemory()
    torch.manual_seed(0)
    inputs = case.make_inputs(device)
    fns = {}
    for label, impl in (("convspectra", case.ours), ("reference", case.reference)):
        if case.direction == "backward":
            fns[label] = _backward_runner(impl, inputs, device)
        else:
            fns[label] = _rotating(impl, inputs)
    # same inputs, same results (up to float32 rounding)
    err = relative_difference(fns["convspectra"](), fns["reference"]())
    row = {
        "family": case.family,
        "case": case.name,
        "direction": case.direction,
        "shape": case.shape,
        "device": str(device),
        "max_rel_diff": err,
    }
    for label, fn in fns.items():
        row[f"{label}_ms"] = time_ms(fn, device, min_run_time)
        row[f"{label}_peak_bytes"] = peak_bytes(fn, device, cpu_memory)
    row["ratio"] = row["reference_ms"] / row["convspectra_ms"]
    row["bandwidth_fraction"] = (
        case.bytes_moved / (row["convspectra_ms"] / 1e3) / bandwidth if bandwidth else None
    )
    row["flop_fraction"] = (
        case.flops / (row["convspectra_ms"] / 1e3) / flop_rate if flop_rate and case.flops else None
    )
    row["ok"] = err <= case.tol
    return {k: row[k] for k in ROW_KEYS}
