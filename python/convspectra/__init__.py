"""convspectra: spectra of convolutional layers and orthogonal convolutions.

Public API (see DESIGN.md): ``symbol``, ``singular_values``, ``svd``,
``spectral_norm``, ``clip_singular_values``, ``nn.spectral_penalty``, ``linalg.svdvals``, ``linalg.svd``, ``backend_info``, and
``reference`` (the same functions in plain PyTorch).
"""

from __future__ import annotations

import torch

from . import _ops, linalg, nn, reference
from .spectrum import clip_singular_values, singular_values, spectral_norm, svd, symbol

__version__ = "0.1.0"

__all__ = [
    "symbol",
    "singular_values",
    "svd",
    "spectral_norm",
    "clip_singular_values",
    "linalg",
    "nn",
    "reference",
    "backend_info",
]


def backend_info() -> dict:
    """What this install runs: whether the compiled library loaded, whether it
    has CUDA kernels, and the torch it was built against and runs with."""
    info = _ops._build_info
    return {
        "compiled": _ops.COMPILED,
        "cuda": _ops.CUDA_KERNELS,
        "torch": torch.__version__,
        "built_with_torch": info.TORCH_VERSION if info else None,
        "built_with_cuda": (info.TORCH_CUDA_VERSION or None) if info else None,
        "cuda_architectures": info.CUDA_ARCHITECTURES if (info and info.CUDA) else None,
        "cuda_available": torch.cuda.is_available(),
        "library": str(_ops.LIBRARY_PATH) if _ops.COMPILED else None,
        "load_error": _ops.load_error,
    }
