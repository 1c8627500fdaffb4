"""What every op promises the compiler and the Python side: the pt2-compliant
tag on each schema, and one set of iteration caps shared by the kernels, the
fakes and the Python checks (read from the build)."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import convspectra as cs
from convspectra import _build_info

OPS = ["svdvals", "svd", "gram_bound", "cayley", "cayley_backward", "bjorck", "bjorck_backward"]


@pytest.mark.parametrize("name", OPS)
def test_every_op_is_tagged_pt2_compliant(name):
    assert torch.Tag.pt2_compliant_tag in getattr(torch.ops.convspectra, name).default.tags


def test_the_caps_come_from_the_build():
    assert (cs.linalg.MAX_GRAM_STEPS, cs.linalg.MAX_BJORCK_ITERS) == (_build_info.MAX_GRAM_STEPS,
                                                                       _build_info.MAX_BJORCK_ITERS)
    assert cs.norms.MAX_GRAM_STEPS == _build_info.MAX_GRAM_STEPS
    assert _build_info.MAX_JACOBI_SWEEPS >= 16


@pytest.mark.parametrize("op, arg, cap", [
    ("gram_bound", "steps", _build_info.MAX_GRAM_STEPS),
    ("bjorck", "iters", _build_info.MAX_BJORCK_ITERS),
])
def test_kernels_fakes_and_python_accept_the_same_range(op, arg, cap):
    A = torch.randn(2, 3, 3, dtype=torch.float64) / 4
    kernel = getattr(torch.ops.convspectra, op)
    public = cs.linalg.gram_bound if op == "gram_bound" else cs.linalg.bjorck
    small = 0 if op == "gram_bound" else 3  # the cap itself would only cost time for bjorck
    assert torch.isfinite(kernel(A, cap if op == "gram_bound" else small)).all()
    assert torch.isfinite(public(A, small)).all()
    for bad in (-1, cap + 1):
        with pytest.raises(RuntimeError, match=rf"{arg} must be in \[0, {cap}\]"):
            kernel(A, bad)
        with FakeTensorMode():
            with pytest.raises(RuntimeError, match=rf"{arg} must be in \[0, {cap}\]"):
                kernel(torch.empty(2, 3, 3, dtype=torch.float64), bad)
        with pytest.raises(ValueError, match=arg):
            public(A, bad)


@pytest.mark.parametrize("shape", [(2, 4, 3), (2, 3, 4), (3, 3)])
def test_op_outputs_are_not_views(shape):
    # a custom op's output must not alias an internal buffer: forward-mode AD rejects such views
    A = torch.randn(*shape, dtype=torch.float64)
    outputs = [*torch.ops.convspectra.svd(A), torch.ops.convspectra.svdvals(A), torch.ops.convspectra.gram_bound(A, 3),
               *torch.ops.convspectra.cayley(A), torch.ops.convspectra.bjorck(A / 4, 2),
               torch.ops.convspectra.bjorck_backward(A, A / 4, 2)]
    assert all(t._base is None for t in outputs)
