"""convspectra: spectra of convolutional layers and orthogonal convolutions.

Public API (docs/architecture.md): ``symbol``, ``singular_values``,
``conv_svd``, ``spectral_norm``, ``clip_singular_values``, whole-network
Lipschitz bounds and certification (``lipschitz_bound``, ``certified_accuracy``
...), the layers, losses, ``spectral_penalty`` and ``export`` of ``nn``, the
batched matrix ops of ``linalg``,
``backend_info``, and ``reference`` (the same functions in plain PyTorch).
"""

from __future__ import annotations

import importlib.metadata
import warnings

import torch

from . import _ops, linalg, nn, reference
from .certify import certified_accuracy, certified_radius, pgd_l2
from .clip import clip_singular_values
from .lipschitz import lipschitz_bound, lipschitz_lower_bound, lipschitz_report, register_lipschitz
from .norms import spectral_norm
from .spectrum import conv_svd, singular_values, symbol

try:  # defined once, in pyproject.toml
    __version__ = importlib.metadata.version("convspectra")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

__all__ = [
    "symbol",
    "singular_values",
    "conv_svd",
    "spectral_norm",
    "clip_singular_values",
    "lipschitz_bound",
    "lipschitz_report",
    "register_lipschitz",
    "lipschitz_lower_bound",
    "certified_radius",
    "certified_accuracy",
    "pgd_l2",
    "linalg",
    "nn",
    "reference",
    "backend_info",
]


def backend_info() -> dict:
    """What this install runs: whether the compiled library loaded, whether it
    has CUDA kernels, the instruction set its CPU kernels use ('default',
    'avx2' or 'avx512': the best this CPU and ATen's ``ATEN_CPU_CAPABILITY``
    allow), the torch it was built against and runs with, and
    ``torch_mismatch``: None, or why those two differ in a way that breaks the
    compiled library's ABI (another torch minor version or CUDA major)."""
    info = _ops._build_info
    return {
        "compiled": _ops.COMPILED,
        "cuda": _ops.CUDA_KERNELS,
        "torch": torch.__version__,
        "built_with_torch": info.TORCH_VERSION if info else None,
        "built_with_cuda": (info.TORCH_CUDA_VERSION or None) if info else None,
        "torch_mismatch": _ops.mismatch,
        "cuda_architectures": info.CUDA_ARCHITECTURES if (info and info.CUDA) else None,
        "cuda_available": torch.cuda.is_available(),
        "cpu_capability": torch.ops.convspectra._cpu_capability() if _ops.COMPILED else None,
        "library": str(_ops.LIBRARY_PATH) if _ops.COMPILED else None,
        "load_error": _ops.load_error,
    }


def svd(weight, input_size):
    """Deprecated name of :func:`conv_svd` (``linalg.svd`` is the matrix SVD)."""
    warnings.warn("convspectra.svd is deprecated: use convspectra.conv_svd (the per-frequency SVD of a conv "
                  "layer) or convspectra.linalg.svd (batched matrices)", FutureWarning, stacklevel=2)
    return conv_svd(weight, input_size)
