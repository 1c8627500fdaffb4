"""Shared test helpers: devices and dtypes to parametrise over, the dense ground
truth of a layer, error measures."""

import pytest
import torch

import convspectra as cs

HAS_CUDA = torch.cuda.is_available()

# Every device test runs on the CPU and, where a GPU exists, on CUDA; without a
# GPU the CUDA cases show up as skipped rather than vanishing.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")),
]


# The element types of the matrix kernels.
DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def dense_svdvals(weight: torch.Tensor, input_size, padding: str = "circular", stride: int = 1) -> torch.Tensor:
    """All singular values of a conv layer (kernel ``weight``), descending, from
    its dense operator in float64 on the CPU (differentiable): the ground truth of docs/math.md §7."""
    T = cs.reference.dense_operator(weight.double().cpu(), input_size, padding, stride)
    return torch.linalg.svdvals(T)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 on the CPU."""
    a = a.detach().to("cpu", torch.complex128 if a.is_complex() else torch.float64)
    b = b.detach().to("cpu", torch.complex128 if b.is_complex() else torch.float64)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def dtype_tol(dtype) -> float:
    """Relative tolerance of a single- or double-precision result."""
    return 1e-5 if dtype in (torch.float32, torch.complex64) else 1e-12


def dense_layer_operator(layer, c_in: int, H: int, W: int) -> torch.Tensor:
    """The matrix of a layer without bias: the layer applied to every basis image."""
    n = c_in * H * W
    basis = torch.eye(n, dtype=torch.float64, device=next(layer.parameters()).device).reshape(n, c_in, H, W)
    with torch.no_grad():
        return layer(basis).reshape(n, -1).T


def load_example(name: str):
    """The module examples/<name>.py, loaded from its file (examples are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
