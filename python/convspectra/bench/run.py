"""The command line of the benchmark: ``convspectra bench`` and
``python -m convspectra.bench``."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from .cases import all_cases, select_cases
from .measure import run_case
from .report import environment_info, format_table, geometric_mean, write_json
from .timing import ResidentPeakMemory, copy_bandwidth, gemm_flop_rate

DESCRIPTION = "Microbenchmarks: convspectra against the plain-PyTorch reference (method: bench/NOTES.md)."


def main(argv=None) -> int:
    """Runs the selected cases, prints the table; 0 if every result matched the
    reference within its tolerance, else 1."""
    p = argparse.ArgumentParser(prog="convspectra bench", description=DESCRIPTION)
    p.add_argument("--full", action="store_true",
                   help="every case of the grid (tens of minutes on a 2-core CPU); by default a run measures the "
                        "representative cases of each family, a few minutes")
    p.add_argument("--quick", action="store_true",
                   help="the default cases with 0.2 s of timing each, about a minute on a CPU")
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
    if args.full and args.quick:
        p.error("--full and --quick exclude each other")
    min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    # --filter / --family pick from the whole grid (unless --quick): naming a
    # family asks for all of its cases.
    subset = args.quick or not (args.full or args.filter or args.family)
    cases = select_cases(all_cases(), quick=subset, name=args.filter, family=args.family)
    if device.type == "cpu" and not (args.filter or args.family):
        cases = [c for c in cases if c.default_on_cpu]

    cpu_memory = ResidentPeakMemory()
    bandwidth = copy_bandwidth(device)
    flop_rate = gemm_flop_rate(device) if any(c.flops for c in cases) else None
    meta = environment_info(device, subset, bandwidth, flop_rate)
    rows = []
    start = time.monotonic()
    for i, case in enumerate(cases):
        print(f"[{i + 1}/{len(cases)}] {case.family}: {case.name} {case.direction}", file=sys.stderr, end="",
              flush=True)
        rows.append(run_case(case, device, min_run_time, cpu_memory, bandwidth, flop_rate))
        elapsed = time.monotonic() - start
        left = elapsed / (i + 1) * (len(cases) - i - 1)
        print(f": ratio {rows[-1]['ratio']:.2f}x ({elapsed:.0f} s so far, about {left:.0f} s left)",
              file=sys.stderr, flush=True)
        if args.json:  # after every case: a run cut short (a time cap) keeps what it measured
            write_json(args.json, meta, rows)
    print(f"convspectra bench: {meta['device_name']} ({device}), torch {meta['torch']}, rev {meta['git_revision']}")
    if flop_rate:
        print(f"%peak: of the measured float32 GEMM rate, {flop_rate / 1e9:.1f} GFLOP/s")
    print(format_table(rows))
    print(summary(rows))
    if args.json:
        write_json(args.json, meta, rows)
    return 0 if all(r["ok"] for r in rows) else 1


def summary(rows: list[dict]) -> str:
    """Per family: the geometric mean of the ratios and the worst case."""
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    lines = ["", "summary (ratio = reference time / convspectra time; geometric mean, worst case):"]
    for family, rs in families.items():
        worst = min(rs, key=lambda r: r["ratio"])
        mean = geometric_mean(r["ratio"] for r in rs)
        lines.append(f"  {family}: {mean:.2f}x over {len(rs)} cases; worst {worst['ratio']:.2f}x ({worst['case']} "
                     f"{worst['direction']})")
    return "\n".join(lines)
