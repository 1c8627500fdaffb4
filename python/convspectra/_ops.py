"""Loads the compiled kernels and registers, for every op of csrc/ops.cpp, its
shape (fake) function, its autograd and its vmap rule.

Nothing here computes: the fakes check their arguments with the same messages
as the kernels (so a torch.compile trace fails as eager mode does), the
autograd rules are the backward methods of the autograd.Functions of
_autograd.py (the same saved tensors and attributes), and the package reaches the
ops through linalg.py (which chooses compiled op or plain-torch fallback) and
the autograd.Functions of _autograd.py (eager mode).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from . import _autograd

LIBRARY_PATH = Path(__file__).with_name("_C.so")

try:
    from . import _build_info
except ImportError as exc:  # a source tree that was never built
    raise ImportError("convspectra is not built: run scripts/setup.sh (or pip install --no-build-isolation .) "
                      "first") from exc

# The kernels' iteration caps (csrc/common/limits.h, written into _build_info by the build).
MAX_GRAM_STEPS: int = _build_info.MAX_GRAM_STEPS
MAX_BJORCK_ITERS: int = _build_info.MAX_BJORCK_ITERS
MAX_JACOBI_SWEEPS: int = _build_info.MAX_JACOBI_SWEEPS


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def torch_mismatch(built_torch: str, built_cuda: str | None, torch_version: str, torch_cuda: str | None) -> str | None:
    """Why the torch running now is not the one the library was compiled
    against (another minor version, or a CPU torch or another CUDA major under
    a library built against a CUDA torch, whose CUDA libraries it links), or
    None. A library built against a CPU torch runs on a CUDA torch of the same
    version (it has no CUDA kernels then: backend_info()["cuda"]). The wheel
    pins the torch minor version, so this only happens when that pin was forced
    (``pip install --no-deps``, an older ``pip install -e``)."""
    problems = []
    if _minor(built_torch) != _minor(torch_version):
        problems.append(f"built against torch {built_torch}, running torch {torch_version}")
    if built_cuda and (not torch_cuda or built_cuda.split(".")[0] != torch_cuda.split(".")[0]):
        problems.append(f"built against CUDA {built_cuda}, running torch with CUDA {torch_cuda or 'none'}")
    if not problems:
        return None
    return ("; ".join(problems) + ": reinstall convspectra against this torch "
            "(pip install --no-build-isolation --force-reinstall .) or install the torch it was built for")


mismatch = torch_mismatch(_build_info.TORCH_VERSION, _build_info.TORCH_CUDA_VERSION or None,
                          torch.__version__, torch.version.cuda)

load_error: str | None = None
try:
    torch.ops.load_library(str(LIBRARY_PATH))
    COMPILED = True
except (OSError, RuntimeError) as exc:  # missing file, ABI mismatch, unresolved symbol
    COMPILED = False
    load_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"convspectra: the compiled library could not be loaded ({load_error}"
        + (f"; {mismatch}" if mismatch else "") + "); running on the plain-PyTorch reference (slower, more memory).",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    if mismatch:  # it loaded, but a call may still crash on an ABI difference
        warnings.warn(f"convspectra: {mismatch}", RuntimeWarning, stacklevel=2)

CUDA_KERNELS = bool(COMPILED and _build_info.CUDA)

_MATRIX_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _check_matrices(A: torch.Tensor, op: str, arg: str) -> None:
    """The kernels' argument check (csrc/aten/checks.h), for the fakes."""
    torch._check(A.dim() >= 2, lambda: f"convspectra::{op}: {arg} must have at least 2 dimensions (..., m, n), "
                                       f"got {A.dim()}")
    torch._check(A.dtype in _MATRIX_DTYPES, lambda: f"convspectra::{op}: {arg} must be "
                                                    f"float32/float64/complex64/complex128, got {A.dtype}")


def _check_count(value: int, low: int, high: int, op: str, arg: str) -> None:
    torch._check(low <= value <= high, lambda: f"convspectra::{op}: {arg} must be in [{low}, {high}], got {value}")


def _check_like(x: torch.Tensor, ref: torch.Tensor, op: str, arg: str, ref_arg: str) -> None:
    """A gradient argument matches the tensor it is the gradient of."""
    torch._check(x.shape == ref.shape, lambda: f"convspectra::{op}: {arg} and {ref_arg} shapes differ: "
                                               f"{list(x.shape)} vs {list(ref.shape)}")
    torch._check(x.dtype == ref.dtype, lambda: f"convspectra::{op}: {arg} and {ref_arg} dtypes differ")
    torch._check(x.device == ref.device, lambda: f"convspectra::{op}: {arg} and {ref_arg} are on different devices")


if COMPILED:

    @torch.library.register_fake("convspectra::svdvals")
    def _svdvals_fake(A):
        _check_matrices(A, "svdvals", "A")
        m, n = A.shape[-2], A.shape[-1]
        return A.new_empty((*A.shape[:-2], torch.sym_min(m, n)), dtype=_real_dtype(A.dtype))

    @torch.library.register_fake("convspectra::svd")
    def _svd_fake(A):
        _check_matrices(A, "svd", "A")
        m, n = A.shape[-2], A.shape[-1]
        k = torch.sym_min(m, n)
        batch = A.shape[:-2]
        return (
            A.new_empty((*batch, m, k)),
            A.new_empty((*batch, k), dtype=_real_dtype(A.dtype)),
            A.new_empty((*batch, k, n)),
        )

    def _svdvals_setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])


    torch.library.register_autograd(
        "convspectra::svdvals", _autograd.SVDVals.backward, setup_context=_svdvals_setup_context
    )

    def _svd_setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # as _autograd.SVD: unused outputs arrive as None
        ctx.save_for_backward(*output)


    torch.library.register_autograd("convspectra::svd", _autograd.SVD.backward, setup_context=_svd_setup_context)

    @torch.library.register_fake("convspectra::gram_bound")
    def _gram_bound_fake(A, steps):
        _check_matrices(A, "gram_bound", "A")
        _check_count(steps, 0, MAX_GRAM_STEPS, "gram_bound", "steps")
        return A.new_empty(A.shape[:-2], dtype=_real_dtype(A.dtype))

    def _gram_bound_setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)
        ctx.steps = inputs[1]


    torch.library.register_autograd(
        "convspectra::gram_bound", _autograd.GramBound.backward, setup_context=_gram_bound_setup_context
    )

    @torch.library.register_fake("convspectra::cayley")
    def _cayley_fake(W):
        _check_matrices(W, "cayley", "W")
        k = torch.sym_min(W.shape[-2], W.shape[-1])
        return W.new_empty(W.shape), W.new_empty((*W.shape[:-2], k, k))

    @torch.library.register_fake("convspectra::cayley_backward")
    def _cayley_backward_fake(grad_Q, W, M):
        _check_matrices(W, "cayley_backward", "W")
        _check_like(grad_Q, W, "cayley_backward", "grad_Q", "W")
        return W.new_empty(W.shape)

    def _cayley_setup_context(ctx, inputs, output):
        Q, M = output
        ctx.mark_non_differentiable(M)  # (I + A)^{-1}, kept for the backward
        ctx.save_for_backward(inputs[0], M)


    torch.library.register_autograd("convspectra::cayley", _autograd.Cayley.backward,
                                    setup_context=_cayley_setup_context)

    @torch.library.register_fake("convspectra::bjorck")
    def _bjorck_fake(X, iters):
        _check_matrices(X, "bjorck", "X")
        _check_count(iters, 0, MAX_BJORCK_ITERS, "bjorck", "iters")
        return X.new_empty(X.shape)

    @torch.library.register_fake("convspectra::bjorck_backward")
    def _bjorck_backward_fake(grad, X, iters):
        _check_matrices(X, "bjorck_backward", "X")
        _check_like(grad, X, "bjorck_backward", "grad", "X")
        _check_count(iters, 0, MAX_BJORCK_ITERS, "bjorck_backward", "iters")
        return X.new_empty(X.shape)

    def _bjorck_setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])  # the backward recomputes the iterates from X
        ctx.iters = inputs[1]


    torch.library.register_autograd("convspectra::bjorck", _autograd.Bjorck.backward,
                                    setup_context=_bjorck_setup_context)

    def _batch_rule(name: str, n_outputs: int):
        """A vmap rule for an op batched over leading dims: the vmapped dim
        moves to the front (unbatched tensor arguments are expanded), one call."""
        op = getattr(torch.ops.convspectra, name)

        def rule(info, in_dims, *args):
            args = [
                (a.movedim(d, 0) if d is not None else a.expand(info.batch_size, *a.shape))
                if isinstance(a, torch.Tensor) else a
                for a, d in zip(args, in_dims)
            ]
            return op(*args), ((0,) * n_outputs if n_outputs > 1 else 0)

        torch.library.register_vmap(f"convspectra::{name}", rule)

    # every tensor op, with its number of outputs
    _TENSOR_OPS = (("svdvals", 1), ("svd", 3), ("gram_bound", 1), ("cayley", 2), ("cayley_backward", 1),
                   ("bjorck", 1), ("bjorck_backward", 1))
    for _name, _n in _TENSOR_OPS:
        _batch_rule(_name, _n)

    # Under torch.autocast the ops compute in float32 (complex and float64
    # inputs are left as they are), as autocast runs torch.linalg: a bfloat16 /
    # float16 matrix reaching an op directly is upcast instead of refused.
    for _name, _ in _TENSOR_OPS:
        for _device in ("cpu", "cuda"):
            torch.library.register_autocast(f"convspectra::{_name}", _device, torch.float32)
