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

Mixed precision (``torch.autocast``) is met the same way: the spectra, norms,
orthogonalisations and every layer's map are computed in float32 / complex64
with autocast off (an orthogonal kernel built from bfloat16 products would be
orthogonal only to 1e-2, and no certificate would hold), from inputs that
autocast left in bfloat16 / float16 upcast to float32. Functions return
float32 (float64 for float64 inputs), like torch.linalg under autocast; layers
return the autocast dtype, like nn.Conv2d, rounding their float32 result once.
"""

from __future__ import annotations

import contextlib
import functools

import torch


LOW_PRECISION = (torch.bfloat16, torch.float16)
AUTOCAST_DEVICES = ("cpu", "cuda")


def autocast_on() -> bool:
    return any(torch.is_autocast_enabled(d) for d in AUTOCAST_DEVICES)


def upcast(value):
    """value, with a bfloat16 / float16 tensor made float32 if autocast is on
    for its device (what autocast does to the inputs of torch.linalg); any
    other value unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype in LOW_PRECISION and _autocast_on_for(value):
        return value.float()
    return value


def _autocast_on_for(t: torch.Tensor) -> bool:
    """Whether autocast is on for t's device (never for meta and other devices
    autocast does not know)."""
    return t.device.type in AUTOCAST_DEVICES and torch.is_autocast_enabled(t.device.type)


def tap_scale(weight: torch.Tensor) -> torch.Tensor:
    """The kernel's largest |tap|, detached (1 for a zero kernel). The spectra
    are homogeneous in the kernel: computed on ``weight / tap_scale(weight)``
    and scaled back, their squares neither underflow (1e-30 kernels in
    float32) nor overflow (1e20 and beyond)."""
    largest = weight.detach().abs().amax()
    return torch.where(largest > 0, largest, torch.ones_like(largest))


@contextlib.contextmanager
def full_float32():
    """TF32 off for cuBLAS and cuDNN, and autocast off, while the block runs
    (in eager mode; the wrappers below turn autocast off under torch.compile)."""
    if torch.compiler.is_compiling():
        yield
        return
    with contextlib.ExitStack() as stack:
        if autocast_on():  # entering the contexts costs ~10 us: only when there is something to turn off
            stack.enter_context(torch.autocast("cpu", enabled=False))
            stack.enter_context(torch.autocast("cuda", enabled=False))
        saved = (torch._C._get_cublas_allow_tf32(), torch._C._get_cudnn_allow_tf32())
        if any(saved):
            torch._C._set_cublas_allow_tf32(False)
            torch._C._set_cudnn_allow_tf32(False)
            stack.callback(torch._C._set_cudnn_allow_tf32, saved[1])
            stack.callback(torch._C._set_cublas_allow_tf32, saved[0])
        yield


def _call_in_float32(fn, *args, **kwargs):
    """fn(*args, **kwargs) under full_float32(); under torch.compile, where the
    TF32 switches cannot be set (the compiled products follow
    ``torch.set_float32_matmul_precision``), with autocast off alone: Dynamo
    traces these context managers into the graph."""
    if torch.compiler.is_compiling():
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*args, **kwargs)
    with full_float32():
        return fn(*args, **kwargs)


def in_full_float32(fn):
    """fn, run under full_float32(), its low-precision tensor arguments upcast
    first under autocast (upcast)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if autocast_on():
            args = tuple(upcast(a) for a in args)
            kwargs = {k: upcast(v) for k, v in kwargs.items()}
        return _call_in_float32(fn, *args, **kwargs)

    return wrapper


def autocast_layer(forward):
    """A layer's forward under autocast: computed in float32 (input upcast,
    autocast off inside), returned in the autocast dtype of the input's device,
    as nn.Conv2d returns it. Without autocast: forward itself."""

    @functools.wraps(forward)
    def wrapper(self, x, *args, **kwargs):
        if not isinstance(x, torch.Tensor) or not _autocast_on_for(x):
            return forward(self, x, *args, **kwargs)
        dtype = torch.get_autocast_dtype(x.device.type)
        y = _call_in_float32(forward, self, x.float() if x.dtype in LOW_PRECISION else x, *args, **kwargs)
        return y.to(dtype) if y.is_floating_point() and y.dtype != torch.float64 else y

    return wrapper
