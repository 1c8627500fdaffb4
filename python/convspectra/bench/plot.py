"""Speed-up plots of the committed benchmark results, one PNG per device.

    python -m convspectra.bench.plot RESULTS_DIR OUT_DIR

Reads every JSON file of RESULTS_DIR (as written by ``--json``; e.g.
bench/results/) and writes OUT_DIR/DEVICE.png: per case, the speed-up
reference time / convspectra time on a log axis, the cases grouped by family.
The files of one device share its name as a prefix (cpu-amd-epyc-2core.json,
cpu-amd-epyc-2core-norms.json, ...) and the same device in their "meta"; that
prefix names the plot.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .report import geometric_mean, read_json

_DIRECTION_ABBREV = {"forward": "fwd", "backward": "bwd", "fwd+bwd": "f+b"}


def speedup(row: dict) -> float | None:
    """reference_ms / convspectra_ms of one row, None where either time is
    missing or not positive (nothing to plot)."""
    ref, ours = row.get("reference_ms"), row.get("convspectra_ms")
    if ref is None or ours is None or not (ref > 0 and ours > 0):
        return None
    return ref / ours


def _device_key(meta: dict) -> tuple:
    return meta.get("device", "?"), meta.get("device_name", "?")


def _common_prefix(stems: list[str]) -> str:
    """The dash-separated words all stems start with."""
    words = [s.split("-") for s in stems]
    common = []
    for parts in zip(*words):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    return "-".join(common)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def device_results(results_dir) -> dict[str, list[tuple[Path, dict, list[dict]]]]:
    """{device name: [(path, meta, rows), ...]} for the JSON files of
    results_dir. Files are grouped by the device their meta names; a group is
    named by its files' common prefix (the slugged device name if they have
    none), and lists the file of that exact name first, then the others by name."""
    groups: dict[tuple, list] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        meta, rows = read_json(path)
        groups.setdefault(_device_key(meta), []).append((path, meta, rows))
    named: dict[str, list] = {}
    for key, files in groups.items():
        name = _common_prefix([p.stem for p, _, _ in files]) or _slug(key[1])
        while name in named:  # two devices with one prefix: keep both plots
            name += "-" + _slug(key[1])
        # the device's main file (named exactly after it) first, then the others
        named[name] = sorted(files, key=lambda f: (f[0].stem != name, f[0].name))
    return named


def speedups_by_family(files) -> dict[str, list[tuple[str, float]]]:
    """{family: [(label, speed-up), ...]} over the rows of files, families and
    cases in the order the files list them; rows without both times are left out."""
    families: dict[str, list[tuple[str, float]]] = {}
    for _, _, rows in files:
        for row in rows:
            value = speedup(row)
            if value is None:
                continue
            direction = _DIRECTION_ABBREV.get(row.get("direction"), row.get("direction"))
            label = f"{row['case']} ({direction})" if direction else row["case"]
            families.setdefault(row["family"], []).append((label, value))
    return families


def plot_device(name: str, files, out_path) -> Path:
    """Draws one device's speed-ups into out_path (PNG) and returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    families = speedups_by_family(files)
    if not families:
        raise ValueError(f"{name}: no row has both times")
    meta = files[0][1]
    # one line per case plus a heading line per family, top to bottom
    labels, values, colours, headings = [], [], [], []
    palette = [f"C{i}" for i in range(10)]
    for i, (family, cases) in enumerate(families.items()):
        headings.append(len(labels))
        labels.append(family)
        values.append(None)
        colours.append(None)
        for label, value in cases:
            labels.append(label)
            values.append(value)
            colours.append(palette[i % len(palette)])
    n = len(labels)
    fig = Figure(figsize=(10, max(3.0, 1.4 + 0.2 * n)))
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    plotted = [(y, v, c) for y, v, c in zip(ys, values, colours) if v is not None]
    # bars grow from 1x, to the right for a speed-up, to the left for a slow-down
    ax.barh([y for y, _, _ in plotted], [v - 1 for _, v, _ in plotted], left=1, height=0.7,
            color=[c for _, _, c in plotted])
    ax.set_xscale("log")
    ax.axvline(1, color="black", linewidth=0.8)
    finite = [v for _, v, _ in plotted]
    lo, hi = min(min(finite), 1.0), max(max(finite), 1.0)
    ax.set_xlim(lo / 1.6, hi * 2.2)  # room for the value labels
    for y, v, _ in plotted:
        ax.text(max(v, 1) * 1.05, y, f"{v:.2f}x" if v < 10 else f"{v:.0f}x", va="center", fontsize=7)
    # family names as headings inside the axes (they are too long for tick labels)
    ax.set_yticks(ys)
    ax.set_yticklabels(["" if i in headings else label for i, label in enumerate(labels)], fontsize=7)
    for i in headings:
        ax.text(0.005, ys[i], labels[i], transform=ax.get_yaxis_transform(), va="center", ha="left",
                fontsize=8, fontweight="bold", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_ylim(-0.7, n - 0.3)
    ticks = [t * 10.0**e for e in range(-3, 5) for t in (1, 2, 5)]
    ax.set_xticks([t for t in ticks if lo / 1.6 <= t <= hi * 2.2])
    ax.set_xticks([], minor=True)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("speed-up: reference time / convspectra time (log scale; > 1: convspectra is faster)")
    ax.grid(axis="x", alpha=0.3)
    threads = meta.get("threads")
    title = f"{meta.get('device_name', name)} ({meta.get('device', '?')}"
    title += f", {threads} threads" if threads else ""
    title += f"), torch {meta.get('torch', '?')}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    return out_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m convspectra.bench.plot", description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", help="folder of benchmark JSON files (e.g. bench/results)")
    p.add_argument("out_dir", help="folder for the PNG files, one per device")
    args = p.parse_args(argv)
    devices = device_results(args.results_dir)
    if not devices:
        print(f"no JSON files in {args.results_dir}", file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    for name, files in devices.items():
        path = plot_device(name, files, Path(args.out_dir) / f"{name}.png")
        values = [v for cases in speedups_by_family(files).values() for _, v in cases]
        print(f"{path}: {len(files)} files, {len(values)} cases, geometric-mean speed-up {geometric_mean(values):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
