"""Timing and peak memory of one callable, on the CPU or a CUDA device.

Times are medians of repeated calls after a warm-up: a plain loop on the CPU
(torch's threads as they are), CUDA events on the GPU. CPU peak memory is the
rise of the process's resident high-water mark (Linux only), GPU peak memory
the rise of torch's allocator peak.
"""

from __future__ import annotations

import ctypes
import gc
import os
import statistics
import sys
from time import perf_counter
from typing import Callable

import torch

MAX_CALLS = 1000  # a cap on the samples of one measurement, however fast the call


def _as_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def synchronize(device="cpu") -> None:
    """Waits for the work queued on ``device`` (a no-op on the CPU)."""
    if _as_device(device).type == "cuda":
        torch.cuda.synchronize(device)


def sample_times_ms(fn: Callable[[], object], device="cpu", min_run_time: float = 1.0,
                    min_calls: int | None = None, max_calls: int = MAX_CALLS) -> list[float]:
    """Milliseconds of each of repeated calls of ``fn()``, after a warm-up call
    (two on CUDA) that is not counted.

    Calls until at least ``min_calls`` were timed (default: 3 on the CPU, 5 on
    CUDA) and ``min_run_time`` seconds have passed, or ``max_calls`` were timed.
    """
    device = _as_device(device)
    on_cuda = device.type == "cuda"
    min_calls = (5 if on_cuda else 3) if min_calls is None else min_calls
    if not 1 <= min_calls <= max_calls:
        raise ValueError(f"need 1 <= min_calls <= max_calls, got {min_calls} and {max_calls}")
    fn()  # warm-up (and first-call initialisation)
    times = []
    if on_cuda:
        fn()
        torch.cuda.synchronize(device)
        first = torch.cuda.Event(enable_timing=True)
        first.record()
        while len(times) < max_calls:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
            if len(times) >= min_calls and first.elapsed_time(end) / 1e3 > min_run_time:
                break
        return times
    # CPU: a plain loop rather than torch.utils.benchmark, whose Timer calls
    # torch.set_num_threads -- after which MKL's batched complex64 LU in torch
    # 2.13's CPU build returned wrong inverses (see bench/NOTES.md)
    start_all = perf_counter()
    while len(times) < max_calls:
        t0 = perf_counter()
        fn()
        times.append((perf_counter() - t0) * 1e3)
        if len(times) >= min_calls and perf_counter() - start_all > min_run_time:
            break
    return times


def time_ms(fn: Callable[[], object], device="cpu", min_run_time: float = 1.0, **kwargs) -> float:
    """The median of :func:`sample_times_ms` (same arguments), in milliseconds."""
    return statistics.median(sample_times_ms(fn, device, min_run_time, **kwargs))


class ResidentPeakMemory:
    """Peak resident memory a call adds to the process, on the CPU.

    Linux only: ``/proc/self/clear_refs`` resets the high-water mark ``VmHWM``
    before the call. Elsewhere ``available`` is False and :meth:`peak_bytes`
    returns None. Creating one pins malloc's mmap threshold at 64 KiB for the
    whole process (see below).
    """

    def __init__(self):
        self.available = sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)
        self._libc = None
        if self.available:
            try:
                self._libc = ctypes.CDLL("libc.so.6")
                # Fixed mmap threshold: freed large buffers return to the OS, so
                # the resident peak of one call does not hide in malloc's cache.
                self._libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
            except OSError:
                self._libc = None

    @staticmethod
    def _status_bytes(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return 0

    def peak_bytes(self, fn: Callable[[], object]) -> int | None:
        """Bytes by which the resident high-water mark rose during ``fn()``
        (0 or more), or None where it cannot be measured."""
        if not self.available:
            return None
        gc.collect()
        if self._libc is not None:
            self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = self._status_bytes("VmRSS:")
        fn()
        return max(0, self._status_bytes("VmHWM:") - base)


def cuda_peak_bytes(fn: Callable[[], object], device="cuda") -> int:
    """Bytes by which torch's CUDA allocator peak rose during ``fn()``."""
    torch.cuda.synchronize(device)
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def peak_bytes(fn: Callable[[], object], device="cpu", cpu_memory: ResidentPeakMemory | None = None) -> int | None:
    """Peak memory ``fn()`` adds on ``device``: :func:`cuda_peak_bytes` on
    CUDA, ``cpu_memory.peak_bytes`` on the CPU (None where unavailable)."""
    if _as_device(device).type == "cuda":
        return cuda_peak_bytes(fn, device)
    return (cpu_memory or ResidentPeakMemory()).peak_bytes(fn)


def gemm_flop_rate(device) -> float:
    """The float32 matrix-product rate of the device in FLOP/s (TF32 off),
    measured: the peak the FLOP fractions of the table assume."""
    device = _as_device(device)
    n = 4096 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ms = time_ms(lambda: a @ b, device, 0.2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * n**3 / (ms / 1e3)


def copy_bandwidth(device) -> float | None:
    """Measured device-to-device copy bandwidth in bytes/s (read + write);
    None on the CPU."""
    device = _as_device(device)
    if device.type != "cuda":
        return None
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    ms = time_ms(lambda: y.copy_(x), device, 0.2)
    return 2 * x.numel() / (ms / 1e3)
