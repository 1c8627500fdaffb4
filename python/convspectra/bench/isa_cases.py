"""The hand-written CPU loops in the copy chosen at run time (AVX2 / AVX-512)
against the same loops compiled for baseline x86-64, side by side.

Both sides call the same op; the baseline side forces it with the private
switch convspectra::_set_cpu_capability. On a CUDA device the switch does not
apply and the ratio is 1 by construction.
"""

from __future__ import annotations

import torch

import convspectra as cs

from .case import N_INPUT_SETS, Case

FAMILY = "CPU kernels: run-time ISA vs baseline x86-64"


def _on_baseline(fn):
    def run(A):
        previous = torch.ops.convspectra._set_cpu_capability("default")
        try:
            return fn(A)
        finally:
            torch.ops.convspectra._set_cpu_capability(previous)

    return run


def _batch(shape, dtype):
    def make(device):
        return tuple(torch.randn(shape, dtype=dtype, device=device) for _ in range(N_INPUT_SETS))

    return make


def isa_cases() -> list[Case]:
    if not cs.backend_info()["compiled"]:
        return []
    c64, f32 = torch.complex64, torch.float32
    ops = [  # (name, fn, batch shape, dtype)
        ("svdvals", cs.linalg.svdvals, (4096, 8, 8), c64),
        ("svdvals", cs.linalg.svdvals, (8192, 4, 4), f32),
        ("gram_bound", lambda A: cs.linalg.gram_bound(A, 10), (1024, 16, 16), c64),
        ("gram_bound", lambda A: cs.linalg.gram_bound(A, 10), (512, 32, 32), f32),
        ("cayley", cs.linalg.cayley, (1024, 16, 16), c64),
        ("bjorck", lambda A: cs.linalg.bjorck(A / A.shape[-1], 20), (2048, 8, 8), f32),
    ]
    cases = []
    for name, fn, shape, dtype in ops:
        b, m, n = shape
        cases.append(Case(
            family=FAMILY, name=f"{name} {b}x{m}x{n}", shape=f"{b}x{m}x{n} {str(dtype).removeprefix('torch.')}",
            make_inputs=_batch(shape, dtype), ours=fn, reference=_on_baseline(fn),
            bytes_moved=b * m * n * torch.empty((), dtype=dtype).element_size() * 2, quick=name == "gram_bound" and m == 16,
        ))
    return cases
