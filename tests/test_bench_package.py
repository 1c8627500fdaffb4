"""The benchmark package's public helpers: timing, peak memory, the relative
difference, the JSON files and the case selection. No speed is asserted: the
timing tests drive a fake clock."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import convspectra
from convspectra import bench
from convspectra.bench import timing

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
COMMITTED = sorted(RESULTS.glob("*.json"))
HAS_CUDA = torch.cuda.is_available()


class FakeClock:
    """perf_counter replaced by a clock that only the timed call advances, by
    the next of ``durations`` seconds."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self):
        return self.now

    def call(self):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_samples_are_the_timed_calls_after_one_warm_up(monkeypatch):
    clock = FakeClock([0.5, 0.001, 0.009, 0.003])  # the 0.5 s warm-up is not counted
    monkeypatch.setattr(timing, "perf_counter", clock)
    samples = bench.sample_times_ms(clock.call, "cpu", min_run_time=0)
    assert samples == pytest.approx([1.0, 9.0, 3.0])  # at least 3 calls on the CPU
    assert clock.calls == 4
    clock.calls = 0
    assert bench.time_ms(clock.call, "cpu", min_run_time=0) == pytest.approx(3.0)  # the median


def test_sampling_stops_after_min_run_time_or_max_calls(monkeypatch):
    clock = FakeClock([0.1])
    monkeypatch.setattr(timing, "perf_counter", clock)
    # 0.1 s each: past 0.45 s after the 5th call
    assert len(bench.sample_times_ms(clock.call, "cpu", min_run_time=0.45)) == 5
    assert len(bench.sample_times_ms(clock.call, "cpu", min_run_time=0, min_calls=7)) == 7
    assert len(bench.sample_times_ms(clock.call, "cpu", min_run_time=100, max_calls=4)) == 4
    with pytest.raises(ValueError, match="min_calls"):
        bench.sample_times_ms(clock.call, "cpu", min_calls=5, max_calls=4)


def test_real_clock_gives_positive_times():
    calls = []
    samples = bench.sample_times_ms(lambda: calls.append(torch.ones(8).sum()), "cpu", min_run_time=0)
    assert len(samples) == 3 and len(calls) == 4 and all(t > 0 for t in samples)
    bench.synchronize("cpu")  # a no-op, accepted on the CPU


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_timing_and_peak_memory():
    x = torch.ones(1024, device="cuda")
    samples = bench.sample_times_ms(lambda: x.mul(2), "cuda", min_run_time=0)
    assert len(samples) == 5 and all(t > 0 for t in samples)
    nbytes = 16 * 2**20
    assert bench.cuda_peak_bytes(lambda: torch.empty(nbytes, dtype=torch.uint8, device="cuda")) >= nbytes
    assert bench.copy_bandwidth("cuda") > 0


@pytest.mark.skipif(not bench.ResidentPeakMemory().available, reason="needs Linux's /proc/self/clear_refs")
def test_cpu_peak_memory_is_the_rise_of_the_resident_peak():
    meter = bench.ResidentPeakMemory()
    nbytes = 64 * 2**20
    big = meter.peak_bytes(lambda: torch.ones(nbytes, dtype=torch.uint8))  # touched, so resident
    assert isinstance(big, int) and big >= 0.9 * nbytes
    assert bench.peak_bytes(lambda: torch.ones(nbytes, dtype=torch.uint8), "cpu", meter) >= 0.9 * nbytes
    assert meter.peak_bytes(lambda: None) < nbytes // 4


def test_cpu_peak_memory_is_none_where_unmeasurable():
    meter = bench.ResidentPeakMemory()
    meter.available = False  # as off Linux
    calls = []
    assert meter.peak_bytes(lambda: calls.append(1)) is None
    assert bench.peak_bytes(lambda: calls.append(1), "cpu", meter) is None
    assert bench.copy_bandwidth("cpu") is None


def test_relative_difference_compares_complex_values_whole():
    b = torch.tensor([1 + 1j, 2 - 2j], dtype=torch.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # casting complex to real warns
        # the real parts agree; the imaginary parts differ by 2 and 4 of |b| = sqrt(10)
        assert bench.relative_difference(b.conj(), b) == pytest.approx((20 / 10) ** 0.5)
        assert bench.relative_difference(b.clone(), b) == 0
    assert bench.relative_difference(torch.tensor([3.0, 4.5]), torch.tensor([3.0, 4.0])) == pytest.approx(0.1)


def row(**changes):
    r = {"family": "f", "case": "c", "direction": "backward", "shape": "s", "device": "cpu", "reference_ms": 2.0,
         "convspectra_ms": 1.0, "ratio": 2.0, "reference_peak_bytes": 3 * 2**20, "convspectra_peak_bytes": None,
         "bandwidth_fraction": None, "flop_fraction": None, "max_rel_diff": 1e-7, "ok": True}
    r.update(changes)
    return {k: r[k] for k in bench.ROW_KEYS}


def test_json_round_trips_and_replaces_the_file(tmp_path):
    path = tmp_path / "new" / "folder" / "b.json"
    meta = {"torch": torch.__version__, "quick": True}
    rows = [row(), row(case="d", ok=False)]
    bench.write_json(path, meta, rows)
    assert bench.read_json(path) == (meta, rows)
    assert list(json.loads(path.read_text())) == ["meta", "rows"]
    bench.write_json(path, meta, rows[:1])
    assert bench.read_json(path) == (meta, rows[:1])
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]  # no temporary left


def test_table_marks_failures_and_unmeasured_memory():
    lines = bench.format_table([row(), row(case="d", ok=False, max_rel_diff=0.5)]).splitlines()
    assert len(lines) == 4 and lines[0].split()[:2] == ["family", "case"]
    assert "bwd" in lines[2] and "3.0" in lines[2] and " - " in lines[2] and "FAIL" not in lines[2]
    assert lines[3].endswith("5.0e-01 FAIL")


def tiny_case(name, ours):
    return bench.Case(family="tiny", name=name, shape="3", make_inputs=lambda device: (torch.arange(3.0),) * 3,
                      ours=ours, reference=lambda x: x + x, bytes_moved=0)


def fail(x):
    raise RuntimeError("cut short")


def test_json_is_written_after_every_case(tmp_path, monkeypatch):
    """A run that dies on its second case leaves the first one's row."""
    monkeypatch.setattr(bench.run, "all_cases", lambda: [tiny_case("a", lambda x: 2 * x), tiny_case("b", fail)])
    path = tmp_path / "b.json"
    with pytest.raises(RuntimeError, match="cut short"):
        bench.main(["--full", "--json", str(path), "--min-run-time", "0"])
    meta, rows = bench.read_json(path)
    assert [r["case"] for r in rows] == ["a"] and tuple(rows[0]) == bench.ROW_KEYS
    assert rows[0]["max_rel_diff"] == 0 and rows[0]["ok"] and rows[0]["ratio"] > 0


def test_a_result_off_the_reference_fails_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.run, "all_cases", lambda: [tiny_case("a", lambda x: 2 * x + 1)])
    assert bench.main(["--full", "--json", str(tmp_path / "b.json"), "--min-run-time", "0"]) == 1
    (r,) = bench.read_json(tmp_path / "b.json")[1]
    assert not r["ok"] and r["max_rel_diff"] == pytest.approx(3**0.5 / 20**0.5)
    assert "FAIL" in capsys.readouterr().out


def test_quick_is_a_subset_and_the_filters_select():
    everything = bench.all_cases()
    quick = bench.select_cases(everything, quick=True)
    assert 0 < len(quick) < len(everything) and all(c in everything and c.quick for c in quick)
    assert {c.family for c in quick} >= {"conv singular values, circular", "cayley map", "bjorck"}
    picked = bench.select_cases(everything, name="c16@32", family="CAYLEY")
    assert [(c.family, c.direction) for c in picked] == [
        ("cayley map", "forward"), ("cayley map", "backward"), ("CayleyConv2d training step", "fwd+bwd")]


@pytest.mark.parametrize("committed", COMMITTED, ids=lambda p: p.name)
def test_committed_results_stay_comparable(committed):
    """Every committed row is still a case, with the same keys in the same order."""
    data = json.loads(committed.read_text())
    cases = {(c.family, c.name, c.direction, c.shape) for c in bench.all_cases()}
    for r in data["rows"]:
        assert tuple(r) == bench.ROW_KEYS
        assert (r["family"], r["case"], r["direction"], r["shape"]) in cases
    assert list(bench.environment_info("cpu", False, None)) == list(data["meta"])


def test_the_default_run_is_the_representative_subset_and_full_the_grid(monkeypatch):
    from convspectra.bench import run

    seen = []  # the cases a run would measure, in order, as (family, name, direction, shape)
    monkeypatch.setattr(run, "run_case", lambda case, *a, **k: seen.append(_key(case)) or _row(case))
    monkeypatch.setattr(run, "copy_bandwidth", lambda device: None)
    monkeypatch.setattr(run, "gemm_flop_rate", lambda device: None)
    assert run.main([]) == 0
    default = list(seen)
    everything = [_key(c) for c in bench.all_cases() if c.default_on_cpu]
    assert default == [_key(c) for c in bench.all_cases() if c.default_on_cpu and c.quick]
    assert 0 < len(default) < len(everything)
    seen.clear()
    assert run.main(["--full"]) == 0
    assert seen == everything
    seen.clear()
    assert run.main(["--family", "bjorck"]) == 0  # a family named: all of its cases
    assert seen == [_key(c) for c in bench.all_cases() if "bjorck" in c.family.lower()] and len(seen) > 1
    with pytest.raises(SystemExit):
        run.main(["--full", "--quick"])


def _key(case):
    return case.family, case.name, case.direction, case.shape


def _row(case):
    return dict(zip(bench.ROW_KEYS, [case.family, case.name, case.direction, case.shape, "cpu", 1.0, 1.0, 1.0, 0, 0,
                                     None, None, 0.0, True]))


def test_quick_rows_have_the_keys_of_a_full_run(tmp_path):
    path = tmp_path / "q.json"
    assert bench.main(["--quick", "--family", "batched svdvals", "--min-run-time", "0", "--json", str(path)]) == 0
    meta, rows = bench.read_json(path)
    full = json.loads((RESULTS / "cpu-amd-epyc-2core.json").read_text())
    assert meta["quick"] is True and list(meta) == list(full["meta"])
    assert [r["case"] for r in rows] == ["c8@64"] and all(list(r) == list(full["rows"][0]) for r in rows)


def test_runs_as_a_module_outside_the_checkout(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(convspectra.__file__).parent.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "convspectra.bench", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: convspectra bench") and "--quick" in out.stdout


def test_summary_gives_the_geometric_mean_and_worst_case_per_family():
    from convspectra.bench.run import summary

    rows = [{"family": "a", "case": "x", "direction": "forward", "ratio": 4.0},
            {"family": "a", "case": "y", "direction": "forward", "ratio": 1.0},
            {"family": "b", "case": "z", "direction": "fwd+bwd", "ratio": 0.5}]
    text = summary(rows)
    assert "a: 2.00x over 2 cases; worst 1.00x (y forward)" in text
    assert "b: 0.50x over 1 cases; worst 0.50x (z fwd+bwd)" in text
