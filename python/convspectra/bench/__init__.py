"""Microbenchmarks: convspectra against the plain-PyTorch reference (method: bench/NOTES.md).

    python -m convspectra.bench [--quick] [--device cpu|cuda] [--json FILE]
    convspectra bench ...

Each row times the same computation both ways on the same random inputs
(several input sets, rotated), reports medians, the ratio reference / ours
(higher is better), the peak memory of each, the relative difference of the
results, and for GPU rows the achieved fraction of the measured copy bandwidth.

Modules: ``timing`` (medians of repeated calls, CUDA synchronisation, peak
memory), ``case``, ``spectrum_cases``, ``orthogonal_cases`` and ``cases`` (the
case families, their grids, the selection), ``measure`` (one case's row),
``report`` (JSON, table, environment), ``run`` (the command line). The helpers
below are the public ones; scripts under bench/ time with :func:`time_ms`.
"""

from .case import Case
from .cases import all_cases, select_cases
from .measure import relative_difference, run_case
from .report import ROW_KEYS, environment_info, format_table, read_json, write_json
from .run import main
from .timing import (
    ResidentPeakMemory,
    copy_bandwidth,
    cuda_peak_bytes,
    peak_bytes,
    sample_times_ms,
    synchronize,
    time_ms,
)

__all__ = [
    "time_ms",
    "sample_times_ms",
    "synchronize",
    "ResidentPeakMemory",
    "cuda_peak_bytes",
    "peak_bytes",
    "copy_bandwidth",
    "relative_difference",
    "Case",
    "all_cases",
    "select_cases",
    "run_case",
    "ROW_KEYS",
    "environment_info",
    "write_json",
    "read_json",
    "format_table",
    "main",
]
