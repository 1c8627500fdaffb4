"""The loop caps that _build_info exports are the ones the compiled ops enforce."""

import pytest
import torch

from convspectra import _build_info


def test_caps_are_the_kernels_ranges():
    A = torch.randn(2, 3, 3, dtype=torch.float64)
    X = A / torch.linalg.matrix_norm(A, 2)[..., None, None]
    assert torch.ops.convspectra.gram_bound(A, _build_info.MAX_GRAM_STEPS).isfinite().all()
    torch.ops.convspectra.gram_bound(A, 0)
    for steps in (-1, _build_info.MAX_GRAM_STEPS + 1):
        with pytest.raises(RuntimeError, match=rf"steps must be in \[0, {_build_info.MAX_GRAM_STEPS}\]"):
            torch.ops.convspectra.gram_bound(A, steps)
    torch.ops.convspectra.bjorck(X, 0)
    torch.ops.convspectra.bjorck_backward(X, X, _build_info.MAX_BJORCK_ITERS)
    for op, args in (("bjorck", (X,)), ("bjorck_backward", (X, X))):
        for iters in (-1, _build_info.MAX_BJORCK_ITERS + 1):
            with pytest.raises(RuntimeError, match=rf"iters must be in \[0, {_build_info.MAX_BJORCK_ITERS}\]"):
                getattr(torch.ops.convspectra, op)(*args, iters)
    assert _build_info.MAX_JACOBI_SWEEPS == 64
