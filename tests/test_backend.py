"""What the install reports, and the plain-PyTorch fallback."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import convspectra as cs


def test_backend_info_reports_the_build():
    info = cs.backend_info()
    assert info["compiled"] is True, info["load_error"]
    assert info["torch"] == torch.__version__
    assert info["built_with_torch"] == torch.__version__
    assert isinstance(info["cuda"], bool)
    if not torch.version.cuda:  # a CPU torch cannot have had CUDA kernels built against it
        assert info["cuda"] is False and info["cuda_architectures"] is None
    assert hasattr(torch.ops.convspectra, "svdvals")
    # the CPU kernels never use more than ATen itself does
    rank = {"default": 0, "avx2": 1, "avx512": 2}
    aten = torch.backends.cpu.get_cpu_capability().lower()
    assert info["cpu_capability"] in rank
    assert rank[info["cpu_capability"]] <= rank.get(aten, 0)


def test_fallback_without_the_compiled_library(tmp_path):
    # A copy of the package without _C.so: the import must warn once and every
    # function must still give the reference's answers.
    pkg = Path(cs.__file__).parent
    shutil.copytree(pkg, tmp_path / "convspectra", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    script = textwrap.dedent(
        """
        import warnings, torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import convspectra as cs
            w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
            s = cs.singular_values(w, (6, 5))
            s.sum().backward()
            A = torch.randn(2, 5, 4)
            a = cs.linalg.svdvals(A)
        loads = [c for c in caught if "could not be loaded" in str(c.message)]
        assert len(loads) == 1, [str(c.message) for c in caught]
        info = cs.backend_info()
        assert info["compiled"] is False and info["cuda"] is False and info["load_error"]
        assert info["cpu_capability"] is None
        ref = cs.reference.singular_values(w.detach(), (6, 5))
        assert torch.allclose(s.detach(), ref, rtol=0, atol=1e-12)
        assert torch.allclose(a, torch.linalg.svdvals(A))
        assert torch.isfinite(w.grad).all()
        print("fallback ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout
