"""Microbenchmarks: convspectra against the plain-PyTorch reference (BENCH.md).

    python -m convspectra.bench [--quick] [--device cpu|cuda] [--json FILE]

Each row times the same computation both ways on the same random inputs
(several input sets, rotated), reports medians, the ratio reference / ours
(higher is better), the peak memory of each, the relative difference of the
results, and for GPU rows the achieved fraction of the measured copy bandwidth.
Timing: a median over repeated calls with the CPU's threads as they are, CUDA
events on the GPU.
CPU peak memory is the rise of the process's resident high-water mark (Linux),
GPU peak memory the rise of torch's allocator peak.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

import convspectra as cs

N_INPUT_SETS = 3


@dataclass
class Case:
    family: str
    name: str
    shape: str
    make_inputs: Callable[[torch.device], tuple]
    ours: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]
    bytes_moved: int  # the fewest bytes our kernel path must move (for GPU fractions)
    quick: bool = False
    direction: str = "forward"
    tol: float = 1e-4


# --------------------------------------------------------------------------- cases
GRID = [(16, 32), (64, 32), (128, 16), (256, 8), (512, 4)]
# ResNet-18's convs at the sizes they see for a 224 x 224 image (conv1 is the
# stride-2 stem), plus the first stage's shape at 112 and 224 for scale.
RESNET18 = [
    ("resnet18.conv1", 64, 3, 7, 224, 2),
    ("resnet18.layer1", 64, 64, 3, 56, 1),
    ("resnet18.layer2", 128, 128, 3, 28, 1),
    ("resnet18.layer3", 256, 256, 3, 14, 1),
    ("resnet18.layer4", 512, 512, 3, 7, 1),
    ("64x64x3x3@112", 64, 64, 3, 112, 1),
    ("64x64x3x3@224", 64, 64, 3, 224, 1),
]
QUICK = {"resnet18.layer1"}  # plus the grid rows each family marks quick


def _weights(c_out, c_in, k):
    def make(device):
        return tuple(torch.randn(c_out, c_in, k, k, device=device) / (c_in * k * k) ** 0.5 for _ in range(N_INPUT_SETS))

    return make


def _spectrum_bytes(c_out, c_in, n, s):
    # the half-grid symbol written and read once, complex64, plus the output
    ho = n // s
    freqs = ho * (ho // 2 + 1)
    return 2 * freqs * c_out * c_in * s * s * 8 + ho * ho * min(c_out, c_in * s * s) * 4


def resnet18_cases() -> list[Case]:
    """The exact circular spectrum of ResNet-18's convs, forward."""
    cases = []
    for name, c_out, c_in, k, n, s in RESNET18:
        cases.append(
            Case(
                family="conv singular values, circular",
                name=name,
                shape=f"{c_out}x{c_in}x{k}x{k} @{n}x{n}" + (f" s{s}" if s > 1 else ""),
                make_inputs=_weights(c_out, c_in, k),
                ours=lambda w, n=n, s=s: cs.singular_values(w, n, stride=s),
                reference=lambda w, n=n, s=s: cs.reference.singular_values(w, n, stride=s),
                bytes_moved=_spectrum_bytes(c_out, c_in, n, s),
                quick=name in QUICK,
            )
        )
    return cases


def _svd_outputs(factors):
    # S and U Vh: invariant to the phase of each singular vector pair, so the
    # two implementations can be compared, and a backward reaches U, S and Vh
    U, S, Vh = factors
    return torch.cat([S.flatten(), torch.view_as_real(U @ Vh).flatten()])


def _reference_gram(w, n):
    # Delattre et al.'s iteration on the full symbol, in plain torch
    return cs.reference.gram_bound(cs.reference.symbol(w, n)).max()


def grid_cases() -> list[Case]:
    """Every family on the c x c x 3 x 3 grid of BENCH.md, forward and backward."""
    families = [  # (family, ours, reference, passes over the symbol, quick rows)
        ("conv singular values, circular", lambda w, n: cs.singular_values(w, n),
         lambda w, n: cs.reference.singular_values(w, n), 1, lambda c, d: c <= 256 and d == "forward"),
        ("per-frequency svd + vectors", lambda w, n: _svd_outputs(cs.svd(w, n)),
         lambda w, n: _svd_outputs(cs.reference.svd(w, n)), 4, lambda c, d: c == 64 and d == "forward"),
        ("spectral norm, exact circular", lambda w, n: cs.spectral_norm(w, n),
         lambda w, n: cs.reference.spectral_norm(w, n), 1, lambda c, d: c == 64 and d == "forward"),
        ("spectral norm, gram", lambda w, n: cs.spectral_norm(w, n, method="gram"), _reference_gram, 1,
         lambda c, d: c == 16 and d == "forward"),
        ("spectral norm, certified zeros", lambda w, n: cs.spectral_norm(w, n, "zeros", "certified"),
         lambda w, n: cs.reference.spectral_norm(w, n + 2), 1, lambda c, d: c == 64 and d == "forward"),
    ]
    cases = []
    for family, ours, ref, passes, quick in families:
        for c, n in GRID:
            for direction in ("forward", "backward"):

                def make(device, c=c, grad=direction == "backward"):
                    return tuple(w.requires_grad_(grad) for w in _weights(c, c, 3)(device))

                cases.append(Case(
                    family=family, name=f"c{c}@{n}", shape=f"{c}x{c}x3x3 @{n}x{n}", make_inputs=make,
                    ours=lambda w, n=n, f=ours: f(w, n), reference=lambda w, n=n, f=ref: f(w, n),
                    bytes_moved=passes * _spectrum_bytes(c, c, n, 1) * (2 if direction == "backward" else 1),
                    direction=direction, quick=quick(c, direction),
                    tol=1e-4 if direction == "forward" else 1e-3,
                ))
    return cases


# Small per-frequency matrices, where the fused Jacobi kernel runs (min(m, n) <= 8
# on the CPU): the symbol of a c x c layer on an n x n grid, half grid.
SMALL_SVD_GRID = [(3, 64), (4, 64), (8, 64), (8, 128)]


def small_svd_cases() -> list[Case]:
    """Batched singular values of F = n (n/2 + 1) complex c x c matrices
    against torch.linalg.svdvals, and the spectrum of a c x c x 3 x 3 layer."""
    cases = []
    for c, n in SMALL_SVD_GRID:
        F = n * (n // 2 + 1)

        def make(device, c=c, F=F):
            return tuple(torch.randn(F, c, c, dtype=torch.complex64, device=device) for _ in range(N_INPUT_SETS))

        cases.append(Case(
            family="batched svdvals, small", name=f"c{c}@{n}", shape=f"{F}x{c}x{c} complex", make_inputs=make,
            ours=cs.linalg.svdvals, reference=torch.linalg.svdvals, bytes_moved=F * c * c * 8 + F * c * 4,
            quick=c == 8 and n == 64,
        ))
        cases.append(Case(
            family="conv singular values, circular", name=f"c{c}@{n}", shape=f"{c}x{c}x3x3 @{n}x{n}",
            make_inputs=_weights(c, c, 3), ours=lambda w, n=n: cs.singular_values(w, n),
            reference=lambda w, n=n: cs.reference.singular_values(w, n),
            bytes_moved=_spectrum_bytes(c, c, n, 1),
        ))
    return cases


CAYLEY_GRID = [(16, 32), (64, 32), (128, 16), (256, 8)]


def cayley_cases() -> list[Case]:
    """The Cayley map on F = n (n/2 + 1) complex c x c matrices (forward and
    backward), and a CayleyConv2d training step (forward + backward, batch 128)
    against the published recipe (torch.inverse per frequency, full fft2 grid)."""
    cases = []
    for c, n in CAYLEY_GRID:
        F = n * (n // 2 + 1)
        for direction in ("forward", "backward"):

            def make(device, c=c, F=F, grad=direction == "backward"):
                return tuple((torch.randn(F, c, c, dtype=torch.complex64, device=device) / c**0.5)
                             .requires_grad_(grad) for _ in range(N_INPUT_SETS))

            cases.append(Case(
                family="cayley map", name=f"c{c}@{n}", shape=f"{F}x{c}x{c} complex", make_inputs=make,
                ours=lambda W: torch.view_as_real(cs.linalg.cayley(W)),
                reference=lambda W: torch.view_as_real(cs.reference.cayley(W)),
                bytes_moved=(2 if direction == "forward" else 4) * F * c * c * 8, direction=direction,
                quick=c == 16 and direction == "forward", tol=1e-3,
            ))
        cases.append(_cayley_layer_case(c, n))
    return cases


def _training_step_case(family: str, layer_class, reference_forward, c: int, n: int, batch: int = 128) -> Case:
    """One training step of a c -> c 3x3 orthogonal layer (forward, loss,
    backward) against reference_forward(layer, x), the published recipe on the
    same parameters. The result compared is the loss and every gradient."""
    layers = {}

    def make(device):
        torch.manual_seed(0)
        layers[device] = layer_class(c, c, 3).to(device)
        return tuple(torch.randn(batch, c, n, n, device=device) for _ in range(N_INPUT_SETS))

    def step(x, reference):
        layer = layers[x.device]
        layer.zero_grad(set_to_none=True)
        y = reference_forward(layer, x) if reference else layer(x)
        loss = y.square().mean()
        loss.backward()
        return torch.cat([loss.detach().reshape(1)] + [p.grad.flatten() for p in layer.parameters()])

    return Case(
        family=family, name=f"c{c}@{n}", shape=f"batch {batch}, {c}x{c}x3x3 @{n}x{n}",
        make_inputs=make, ours=lambda x: step(x, False), reference=lambda x: step(x, True),
        bytes_moved=4 * batch * c * n * n * 4, direction="fwd+bwd", quick=False, tol=1e-3,
    )


def _cayley_layer_case(c: int, n: int) -> Case:
    return _training_step_case(
        "CayleyConv2d training step", cs.nn.CayleyConv2d,
        lambda layer, x: cs.reference.cayley_conv2d(x, layer.weight, layer.alpha, layer.bias), c, n)


BJORCK_CHANNELS = [16, 64, 128, 256, 512]


def _fwd_bwd(fn, w):
    """fn(w), then the gradient of a fixed linear loss of it: forward + backward."""
    w = w.detach().requires_grad_(True)
    y = fn(w)
    g = torch.linspace(0.5, 1.5, y.numel(), device=w.device, dtype=y.dtype).reshape(y.shape)
    (grad,) = torch.autograd.grad(y, w, g)
    return torch.cat([y.detach().flatten(), grad.flatten()])


def bcop_cases() -> list[Case]:
    """Bjorck (20 steps) on the 2(k-1)+1 = 5 free c x c matrices of a 3 x 3
    BCOP layer, the BCOP kernel construction (both forward + backward), and a
    BCOPConv2d training step (batch 128), against the published recipe: a
    Python loop of products per matrix and per pair of taps."""
    cases = []
    for c in BJORCK_CHANNELS:
        def make(device, c=c):
            return tuple(torch.stack([torch.linalg.qr(torch.randn(c, c, device=device))[0] for _ in range(5)])
                         for _ in range(N_INPUT_SETS))

        cases.append(Case(
            family="bjorck", name=f"c{c}", shape=f"5x{c}x{c}, 20 steps", make_inputs=make,
            ours=lambda W: _fwd_bwd(cs.linalg.bjorck, W), reference=lambda W: _fwd_bwd(cs.reference.bjorck, W),
            bytes_moved=5 * c * c * 4 * 4, direction="fwd+bwd", quick=c == 16, tol=1e-3,
        ))
        cases.append(Case(
            family="BCOP kernel", name=f"c{c}", shape=f"{c}x{c}x3x3 from 5x{c}x{c}", make_inputs=make,
            ours=lambda W, c=c: _fwd_bwd(lambda w: cs.nn.bcop_kernel(w, c, c), W),
            reference=lambda W, c=c: _fwd_bwd(lambda w: cs.reference.bcop_kernel(w, c, c), W),
            bytes_moved=5 * c * c * 4 * 4, direction="fwd+bwd", quick=False, tol=1e-3,
        ))
    return cases + [_bcop_layer_case(c, n) for c, n in CAYLEY_GRID]


def _bcop_layer_case(c: int, n: int) -> Case:
    return _training_step_case(
        "BCOPConv2d training step", cs.nn.BCOPConv2d,
        lambda layer, x: cs.reference.bcop_conv2d(x, layer.matrices, c, layer.bias), c, n)


def all_cases() -> list[Case]:
    return grid_cases() + resnet18_cases() + small_svd_cases() + cayley_cases() + bcop_cases()


# ------------------------------------------------------------------- measurement
class _CpuMemory:
    """Peak resident memory added by a call (Linux: VmHWM, reset via clear_refs)."""

    def __init__(self):
        self.ok = sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)
        self.libc = None
        if self.ok:
            try:
                self.libc = ctypes.CDLL("libc.so.6")
                # Fixed mmap threshold: freed large buffers return to the OS, so
                # the resident peak of one call does not hide in malloc's cache.
                self.libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
            except OSError:
                self.libc = None

    @staticmethod
    def _status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return 0

    def peak(self, fn) -> int | None:
        if not self.ok:
            return None
        gc.collect()
        if self.libc is not None:
            self.libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = self._status("VmRSS:")
        fn()
        return max(0, self._status("VmHWM:") - base)


def _cuda_peak(fn) -> int:
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _time_ms(fn, device: torch.device, min_run_time: float) -> float:
    fn()  # warm-up (and first-call initialisation)
    if device.type == "cuda":
        fn()
        torch.cuda.synchronize()
        times = []
        first = torch.cuda.Event(enable_timing=True)
        first.record()
        while len(times) < 1000:  # at least 5 calls and min_run_time seconds
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
            if len(times) >= 5 and first.elapsed_time(end) / 1e3 > min_run_time:
                break
        return statistics.median(times)
    # CPU: a plain loop rather than torch.utils.benchmark, whose Timer calls
    # torch.set_num_threads -- after which MKL's batched complex64 LU in torch
    # 2.13's CPU build returned wrong inverses (see bench/NOTES.md)
    times = []
    start_all = time.perf_counter()
    while len(times) < 1000:  # at least 3 calls and min_run_time seconds
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start_all > min_run_time:
            break
    return statistics.median(times) * 1e3


def _rotating(fn, inputs):
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


def _copy_bandwidth(device) -> float | None:
    """Measured device-to-device copy bandwidth in bytes/s (read + write)."""
    if device.type != "cuda":
        return None
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    ms = _time_ms(lambda: y.copy_(x), device, 0.2)
    return 2 * x.numel() / (ms / 1e3)


def _rel_diff(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def run_case(case: Case, device: torch.device, min_run_time: float, mem: _CpuMemory, bandwidth) -> dict:
    torch.manual_seed(0)
    inputs = case.make_inputs(device)
    fns = {}
    for label, impl in (("convspectra", case.ours), ("reference", case.reference)):
        if case.direction == "backward":
            fns[label] = _backward_runner(impl, inputs, device)
        else:
            fns[label] = _rotating(impl, inputs)
    # same inputs, same results (up to float32 rounding)
    err = _rel_diff(fns["convspectra"](), fns["reference"]())
    row = {
        "family": case.family,
        "case": case.name,
        "direction": case.direction,
        "shape": case.shape,
        "device": str(device),
        "max_rel_diff": err,
    }
    for label, fn in fns.items():
        row[f"{label}_ms"] = _time_ms(fn, device, min_run_time)
        row[f"{label}_peak_bytes"] = _cuda_peak(fn) if device.type == "cuda" else mem.peak(fn)
    row["ratio"] = row["reference_ms"] / row["convspectra_ms"]
    row["bandwidth_fraction"] = (
        case.bytes_moved / (row["convspectra_ms"] / 1e3) / bandwidth if bandwidth else None
    )
    row["ok"] = err <= case.tol
    return {
        k: row[k]
        for k in (
            "family", "case", "direction", "shape", "device", "reference_ms", "convspectra_ms", "ratio",
            "reference_peak_bytes", "convspectra_peak_bytes", "bandwidth_fraction", "max_rel_diff", "ok",
        )
    }


# ----------------------------------------------------------------------- report
def _git_revision() -> str:
    for cwd in (os.getcwd(), os.path.dirname(os.path.abspath(__file__))):
        try:
            out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True)
            if out.returncode == 0:
                return out.stdout.strip()
        except OSError:
            pass
    return "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mb(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


_DIRECTION_ABBREV = {"forward": "fwd", "backward": "bwd", "fwd+bwd": "f+b"}


def format_table(rows: list[dict]) -> str:
    head = ["family", "case", "dir", "shape", "device", "ref ms", "ours ms", "ratio", "ref MiB", "ours MiB",
            "%bw", "rel diff"]
    body = []
    for r in rows:
        body.append([
            r["family"], r["case"], _DIRECTION_ABBREV.get(r["direction"], r["direction"]), r["shape"], r["device"], f"{r['reference_ms']:.3f}",
            f"{r['convspectra_ms']:.3f}", f"{r['ratio']:.2f}x", _mb(r["reference_peak_bytes"]),
            _mb(r["convspectra_peak_bytes"]),
            "-" if r["bandwidth_fraction"] is None else f"{100 * r['bandwidth_fraction']:.1f}",
            f"{r['max_rel_diff']:.1e}" + ("" if r["ok"] else " FAIL"),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="convspectra bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small subset, well under a minute on a CPU")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    p.add_argument("--filter", metavar="TEXT", help="only cases whose name or shape contains TEXT")
    p.add_argument("--family", metavar="TEXT", help="only cases whose family contains TEXT (e.g. BCOP)")
    p.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per measurement")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda, got {args.device!r}")
    min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    cases = [c for c in all_cases() if c.quick or not args.quick]
    if args.filter:
        cases = [c for c in cases if args.filter in c.name or args.filter in c.shape]
    if args.family:
        cases = [c for c in cases if args.family.lower() in c.family.lower()]

    mem = _CpuMemory()
    bandwidth = _copy_bandwidth(device)
    rows = []
    meta = _meta(device, args.quick, bandwidth)
    for case in cases:
        rows.append(run_case(case, device, min_run_time, mem, bandwidth))
        print(f"  {case.name} {case.direction}: ratio {rows[-1]['ratio']:.2f}x", file=sys.stderr, flush=True)
        if args.json:  # after every case: a run cut short (a time cap) keeps what it measured
            _write_json(args.json, meta, rows)
    print(f"convspectra bench: {meta['device_name']} ({device}), torch {meta['torch']}, rev {meta['git_revision']}")
    print(format_table(rows))
    if args.json:
        _write_json(args.json, meta, rows)
    return 0 if all(r["ok"] for r in rows) else 1


def _write_json(path, meta, rows) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)


def _meta(device, quick: bool, bandwidth) -> dict:
    return {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": _device_name(device),
        "git_revision": _git_revision(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": cs.backend_info(),
    }


if __name__ == "__main__":
    sys.exit(main())
