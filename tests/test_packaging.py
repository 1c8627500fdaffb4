"""The installed package's metadata: the torch pin and CUDA label that
build_support/torch_pin.py writes into the wheel, the version defined once, the
run-time report of a torch that differs from the build's, and numpy as an
optional extra."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import convspectra as cs
from convspectra import _ops, cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build_support"))
import torch_pin  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("version,expected", [("2.13.0+cpu", "torch==2.13.*"), ("2.11.1", "torch==2.11.*"),
                                              ("2.14.0.dev20260101+cu130", "torch==2.14.*"), ("3.0.0", "torch==3.0.*")])
def test_torch_requirement_pins_the_minor_version(version, expected):
    assert torch_pin.torch_requirement(version) == expected


@pytest.mark.parametrize("cuda,label", [(None, ""), ("", ""), ("13.0", "+cu130"), ("12.8", "+cu128"), ("13.1.2", "+cu131")])
def test_cuda_label(cuda, label):
    assert torch_pin.cuda_label(cuda) == label


def test_the_installed_metadata_is_what_the_provider_gives_for_this_torch():
    import importlib.metadata

    settings = PYPROJECT["tool"]["scikit-build"]["metadata"]
    version = torch_pin.dynamic_metadata("version", settings["version"])
    assert version == settings["version"]["base"] + torch_pin.cuda_label(torch.version.cuda)
    requires = torch_pin.dynamic_metadata("dependencies", settings["dependencies"])
    major, minor = torch.__version__.split(".")[:2]
    assert requires == [f"torch=={major}.{minor}.*"]
    assert cs.__version__ == importlib.metadata.version("convspectra") == version
    core = [r for r in importlib.metadata.requires("convspectra") if "extra ==" not in r]
    assert core == requires  # numpy is an extra, torch the only dependency


def test_version_is_defined_once(capsys):
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"convspectra {cs.__version__}"


def test_a_build_without_torch_stops_with_one_line_that_says_what_to_run():
    # The provider in an interpreter that cannot import torch (pip's isolated build).
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]); import torch_pin; "
            "torch_pin.dynamic_metadata('dependencies', {})")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "build_support")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install --no-build-isolation ." in lines[0], done.stderr


def test_torch_mismatch_is_none_for_the_same_minor_and_cuda():
    assert _ops.torch_mismatch("2.13.0+cpu", None, "2.13.1", None) is None
    assert _ops.torch_mismatch("2.11.0", "13.0", "2.11.0+cu130", "13.0") is None
    assert _ops.torch_mismatch("2.11.0", "13.0", "2.11.0+cu131", "13.1") is None  # same CUDA major
    # a library built against a CPU torch links no CUDA library: it runs (without CUDA kernels) on a CUDA torch
    assert _ops.torch_mismatch("2.13.0+cpu", None, "2.13.0", "13.0") is None
    assert cs.backend_info()["torch_mismatch"] is None  # this install


@pytest.mark.parametrize("built,built_cuda,running,running_cuda,words", [
    ("2.13.0+cpu", None, "2.14.0", None, ["torch 2.13.0+cpu", "torch 2.14.0"]),
    ("2.13.0", "13.0", "2.13.0+cpu", None, ["CUDA 13.0", "CUDA none"]),
    ("2.13.0", "12.8", "2.13.0", "13.0", ["CUDA 12.8", "CUDA 13.0"]),
])
def test_torch_mismatch_names_both_sides_and_the_fix(built, built_cuda, running, running_cuda, words):
    message = _ops.torch_mismatch(built, built_cuda, running, running_cuda)
    assert message is not None and all(w in message for w in words) and "--no-build-isolation" in message


def test_spectra_without_numpy_are_the_same(monkeypatch):
    from convspectra.spectrum import circular

    w = torch.randn(3, 2, 3, 3, dtype=torch.float64).repeat(1, 2, 1, 1)  # duplicated input channels
    with_numpy = cs.singular_values(w, (6, 5))
    monkeypatch.setattr(circular, "numpy", None)
    without = cs.singular_values(w, (6, 5))
    torch.testing.assert_close(without, with_numpy, rtol=0, atol=1e-12)
