"""The run's output: the JSON file (environment and rows) and the table."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess

import torch

# The keys of a row, in the order of the JSON files under bench/results/.
ROW_KEYS = (
    "family", "case", "direction", "shape", "device", "reference_ms", "convspectra_ms", "ratio",
    "reference_peak_bytes", "convspectra_peak_bytes", "bandwidth_fraction", "flop_fraction", "max_rel_diff", "ok",
)


def geometric_mean(values) -> float:
    """The geometric mean of positive numbers (of speed-up ratios)."""
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def git_revision() -> str:
    """The short revision of the checkout run from (the working directory's, or
    this file's), else "unknown"."""
    for cwd in (os.getcwd(), os.path.dirname(os.path.abspath(__file__))):
        try:
            out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True)
            if out.returncode == 0:
                return out.stdout.strip()
        except OSError:
            pass
    return "unknown"


def device_name(device) -> str:
    """The GPU's name, or the CPU's model name."""
    device = torch.device(device)
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


def environment_info(device, quick: bool, bandwidth: float | None, flop_rate: float | None = None) -> dict:
    """The "meta" object of the JSON: torch, device, revision, threads, date,
    the compiled backend."""
    import convspectra as cs

    return {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "quick": quick,  # the representative subset (a default or --quick run), not the whole grid
        "copy_bandwidth_bytes_per_s": bandwidth,
        "gemm_flops_per_s": flop_rate,  # measured float32 GEMM: the peak of "%peak"
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": cs.backend_info(),
    }


def write_json(path, meta: dict, rows: list[dict]) -> None:
    """Writes {"meta": meta, "rows": rows} to ``path`` (its folder created if
    needed). The file is replaced whole: a run killed while writing leaves the
    previous version, never half a file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    os.replace(tmp, path)


def read_json(path) -> tuple[dict, list[dict]]:
    """(meta, rows) of a file written by :func:`write_json`."""
    with open(path) as f:
        data = json.load(f)
    return data["meta"], data["rows"]


def _mib(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


_DIRECTION_ABBREV = {"forward": "fwd", "backward": "bwd", "fwd+bwd": "f+b"}


def format_table(rows: list[dict]) -> str:
    """The rows as a plain-text table, one line each (FAIL marks a relative
    difference above the case's tolerance)."""
    head = ["family", "case", "dir", "shape", "device", "ref ms", "ours ms", "ratio", "ref MiB", "ours MiB",
            "%bw", "%peak", "rel diff"]
    body = []
    for r in rows:
        body.append([
            r["family"], r["case"], _DIRECTION_ABBREV.get(r["direction"], r["direction"]), r["shape"], r["device"],
            f"{r['reference_ms']:.3f}", f"{r['convspectra_ms']:.3f}", f"{r['ratio']:.2f}x",
            _mib(r["reference_peak_bytes"]), _mib(r["convspectra_peak_bytes"]),
            "-" if r["bandwidth_fraction"] is None else f"{100 * r['bandwidth_fraction']:.1f}",
            "-" if r.get("flop_fraction") is None else f"{100 * r['flop_fraction']:.1f}",
            f"{r['max_rel_diff']:.1e}" + ("" if r["ok"] else " FAIL"),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])
