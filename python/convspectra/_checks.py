"""Argument validation shared by the public API and the reference.

Every check raises TypeError (wrong type or dtype) or ValueError (wrong shape,
size or value) with a message that names the argument and what was expected.
"""

from __future__ import annotations

import numbers

import torch

REAL_DTYPES = (torch.float32, torch.float64)
FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
MATRIX_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
PADDINGS = ("circular", "zeros")


def check_tensor(x, name: str, dtypes=REAL_DTYPES) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        names = "/".join(str(d).replace("torch.", "") for d in dtypes)
        hint = ""
        if x.dtype in (torch.bfloat16, torch.float16) and torch.float32 in dtypes:
            hint = (" (convspectra computes in float32: keep float32 parameters and inputs, and use torch.autocast "
                    "for mixed precision)")
        raise TypeError(f"{name} must have dtype {names}, got {x.dtype}{hint}")


def check_weight(weight, name: str = "weight") -> None:
    """A real conv weight (c_out, c_in, kh, kw) with no zero dimension."""
    check_tensor(weight, name, REAL_DTYPES)
    if weight.dim() != 4:
        raise ValueError(f"{name} must be 4-D (c_out, c_in, kh, kw), got shape {tuple(weight.shape)}")
    if weight.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(weight.shape)}")


def check_matrices(A, name: str = "A") -> None:
    """A batch of matrices (..., m, n); empty batches are allowed."""
    check_tensor(A, name, MATRIX_DTYPES)
    if A.dim() < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., m, n), got shape {tuple(A.shape)}")


def positive_float(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not v > 0 or v != v or v == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {v}")
    return float(v)


def nonnegative_float(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not v >= 0 or v == float("inf"):
        raise ValueError(f"{name} must be a non-negative finite number, got {v}")
    return float(v)


def positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def nonnegative_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return int(v)


def input_size_pair(input_size, weight, name: str = "input_size") -> tuple[int, int]:
    """(H, W) from an int or a pair; the kernel must fit in the input."""
    if isinstance(input_size, numbers.Integral) and not isinstance(input_size, bool):
        pair = (input_size, input_size)
    elif isinstance(input_size, (tuple, list, torch.Size)) and len(input_size) == 2:
        pair = tuple(input_size)
    else:
        raise TypeError(f"{name} must be an int or a pair (H, W) of ints, got {input_size!r}")
    H, W = (positive_int(v, name) for v in pair)
    kh, kw = weight.shape[-2:]
    if kh > H or kw > W:
        raise ValueError(f"weight kernel ({kh}, {kw}) is larger than {name} ({H}, {W})")
    return H, W


def check_padding(padding) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def check_stride(stride, H: int, W: int) -> int:
    s = positive_int(stride, "stride")
    if H % s or W % s:
        raise ValueError(f"stride {s} must divide input_size ({H}, {W})")
    return s


def int_in_range(v, name: str, low: int, high: int) -> int:
    """An int with low <= v <= high."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return int(v)


def check_bool(v, name: str) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    return v
