"""python -m convspectra.bench.plot: one valid PNG per device of bench/results/,
and the speed-ups it draws are reference_ms / convspectra_ms of the JSON."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
import convspectra.bench  # noqa: E402  (the package plot.py's relative import resolves to)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SOURCE = ROOT / "python" / "convspectra" / "bench" / "plot.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_plot():
    """The checkout's plot.py (an installed copy may predate it)."""
    spec = importlib.util.spec_from_file_location("convspectra.bench.plot", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plot():
    return load_plot()


def committed_devices() -> set[tuple[str, str]]:
    devices = set()
    for path in RESULTS.glob("*.json"):
        meta = json.loads(path.read_text())["meta"]
        devices.add((meta["device"], meta["device_name"]))
    return devices


def read_png(path: Path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 800, (path, image.shape)
    assert (image[..., :3] < 0.5).any()  # something is drawn
    return image


def test_command_line_writes_one_png_per_device(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    # the convspectra these tests import (installed, or a built source tree)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(convspectra.__file__).parent.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "convspectra.bench.plot", str(RESULTS), str(tmp_path / "img")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pngs = sorted((tmp_path / "img").glob("*.png"))
    assert len(pngs) == len(committed_devices()) >= 2
    for png in pngs:
        read_png(png)
    # every results file belongs to the device plot whose name it starts with
    names = [p.stem for p in pngs]
    for path in RESULTS.glob("*.json"):
        assert sum(path.stem.startswith(n) for n in names) == 1, (path.name, names)
    assert "cpu-amd-epyc-2core" in names and "cpu-intel-xeon-2core" in names


def test_speedups_are_the_json_ratios(plot):
    devices = plot.device_results(RESULTS)
    total = 0
    for name, files in devices.items():
        drawn = plot.speedups_by_family(files)
        expected: dict[str, list[float]] = {}
        for path in RESULTS.glob(f"{name}*.json"):
            for row in json.loads(path.read_text())["rows"]:
                value = row["reference_ms"] / row["convspectra_ms"]
                assert math.isclose(value, row["ratio"], rel_tol=1e-9)
                expected.setdefault(row["family"], []).append(value)
        assert set(drawn) == set(expected)
        for family, cases in drawn.items():
            assert sorted(v for _, v in cases) == pytest.approx(sorted(expected[family]), rel=1e-12)
            total += len(cases)
    assert total == sum(len(json.loads(p.read_text())["rows"]) for p in RESULTS.glob("*.json"))


def _write(path: Path, device_name: str, rows: list[dict]):
    meta = {"device": "cpu", "device_name": device_name, "threads": 2, "torch": "x"}
    path.write_text(json.dumps({"meta": meta, "rows": rows}))


def _row(family, case, ref, ours, direction="forward"):
    return {"family": family, "case": case, "direction": direction, "reference_ms": ref, "convspectra_ms": ours,
            "ratio": None if not (ref and ours) else ref / ours}


def test_grouping_naming_and_missing_times(plot, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _write(results / "cpu-a-2core.json", "A", [_row("f", "x", 6.0, 2.0), _row("f", "y", 1.0, 4.0, "backward")])
    _write(results / "cpu-a-2core-more.json", "A", [_row("g", "z", 5.0, None), _row("g", "w", 2.0, 1.0)])
    _write(results / "gpu-b.json", "B", [_row("f", "x", 3.0, 1.0)])
    devices = plot.device_results(results)
    assert sorted(devices) == ["cpu-a-2core", "gpu-b"]
    assert [p.name for p, _, _ in devices["cpu-a-2core"]] == ["cpu-a-2core.json", "cpu-a-2core-more.json"]
    drawn = plot.speedups_by_family(devices["cpu-a-2core"])
    assert drawn == {"f": [("x (fwd)", 3.0), ("y (bwd)", 0.25)], "g": [("w (fwd)", 2.0)]}  # z has no time
    assert plot.main([str(results), str(tmp_path / "img")]) == 0
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["cpu-a-2core.png", "gpu-b.png"]
    for png in (tmp_path / "img").iterdir():
        read_png(png)
    assert plot.main([str(tmp_path / "empty"), str(tmp_path / "img2")]) == 1


def test_the_benchmarks_page_shows_every_device(plot):
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    for name in plot.device_results(RESULTS):
        assert f"](img/bench/{name}.png)" in page, name
