"""Full float32 precision for the products convspectra computes with torch ops.

torch lets cuBLAS and cuDNN trade float32 matmuls and convolutions for TF32
(10-bit mantissa) through global switches, and cuDNN convolutions do so by
default. The spectra, gradients and norms here are promised to float32
accuracy, so every path that runs torch products on float32 data (the
gradient formulas, the symbol transforms, the Lanczos iteration, the
plain-PyTorch fallbacks) runs them with TF32 off, as torch's own linear-algebra
backward passes do. The compiled kernels never use TF32.

The switches are process-global: they are turned off for the duration of a
call and restored after it. Under torch.compile nothing is changed (a traced
graph cannot set them; the compiled products follow
``torch.set_float32_matmul_precision``).
"""

from __future__ import annotations

import contextlib
import functools

import torch


@contextlib.contextmanager
def full_float32():
    """TF32 off for cuBLAS and cuDNN while the block runs."""
    if torch.compiler.is_compiling():
        yield
        return
    saved = (torch._C._get_cublas_allow_tf32(), torch._C._get_cudnn_allow_tf32())
    if not any(saved):
        yield
        return
    torch._C._set_cublas_allow_tf32(False)
    torch._C._set_cudnn_allow_tf32(False)
    try:
        yield
    finally:
        torch._C._set_cublas_allow_tf32(saved[0])
        torch._C._set_cudnn_allow_tf32(saved[1])


def in_full_float32(fn):
    """fn, run under full_float32()."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():  # a constant to Dynamo: no context manager is traced
            return fn(*args, **kwargs)
        with full_float32():
            return fn(*args, **kwargs)

    return wrapper
