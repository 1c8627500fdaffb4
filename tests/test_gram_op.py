"""The fused Gram-iteration op against the reference and the true norm."""

import pytest
import torch

import convspectra as cs
from helpers import DTYPES, DEVICES, dtype_tol, rel_err

# both sides of the CPU's serial / batched split (min(m, n) = 32)
SHAPES = [(1, 1), (3, 5), (5, 3), (8, 8), (32, 20), (20, 32), (33, 33), (70, 40)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_gram_bound_matches_reference_and_bounds_the_norm(device, dtype, shape, steps):
    A = torch.randn(3, *shape, dtype=dtype, device=device)
    ours = torch.ops.convspectra.gram_bound(A, steps)
    assert ours.shape == (3,) and ours.dtype == dtype.to_real() and ours.device == A.device
    tol = dtype_tol(dtype)
    assert rel_err(ours, cs.reference.gram_bound(A, steps)) < tol
    norm = torch.linalg.matrix_norm(A.cpu().to(torch.complex128), ord=2)
    r = min(shape)
    assert bool((ours.cpu().double() >= norm * (1 - tol)).all())
    # the guarantee: at most r^(1 / 2^(steps+1)) above the norm
    assert bool((ours.cpu().double() <= norm * r ** (1 / 2 ** (steps + 1)) * (1 + tol)).all())


@pytest.mark.parametrize("device", DEVICES)
def test_gram_bound_edge_cases(device):
    A = torch.randn(4, 6, 6, device=device)
    A[0] = 0
    A[1, 2, 3] = float("nan")
    A[2, 0, 0] = float("inf")
    A[3] *= 1e30  # squarings would overflow without the rescaling
    out = torch.ops.convspectra.gram_bound(A, 10)
    assert out[0].item() == 0.0 and torch.isnan(out[1]) and torch.isnan(out[2])
    assert out[3].item() == pytest.approx(torch.linalg.matrix_norm(A[3].double().cpu(), ord=2).item(), rel=1e-3)
    # subnormal entries: 1 / max|A| overflows, the rescaling must divide instead
    for shape in [(1, 4, 4), (1, 40, 40)]:  # both CPU paths
        tiny = torch.full(shape, 1e-39, dtype=torch.float32, device=device)
        expected = 1e-39 * shape[-1]  # rank one: the norm is 1e-39 * n
        assert torch.ops.convspectra.gram_bound(tiny, 4).item() == pytest.approx(expected, rel=1e-3, abs=0)
    # below the float32 range in double precision (real and complex): scaled by the double's floor
    for dtype in (torch.float64, torch.complex128):
        for shape in [(1, 4, 4), (1, 40, 40)]:
            tiny = torch.full(shape, 1e-300, dtype=dtype, device=device)
            expected = 1e-300 * shape[-1]
            assert torch.ops.convspectra.gram_bound(tiny, 4).item() == pytest.approx(expected, rel=1e-3, abs=0)
    assert torch.ops.convspectra.gram_bound(torch.randn(0, 3, 3, device=device), 5).shape == (0,)
    assert torch.ops.convspectra.gram_bound(torch.randn(2, 0, 3, device=device), 5).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gram_bound_gradcheck(device, dtype):
    A = torch.randn(2, 5, 4, dtype=dtype, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda A: torch.ops.convspectra.gram_bound(A, 4), (A,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_gram_bound_opcheck(device, dtype):
    # tall, wide (a conjugate transpose inside) and large (the batched path)
    for shape in [(3, 4, 4), (2, 5, 3), (2, 3, 5), (2, 40, 36), (2, 36, 40)]:
        A = torch.randn(shape, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.convspectra.gram_bound.default, (A, 6))
        torch.library.opcheck(torch.ops.convspectra.gram_bound.default, (A.clone().requires_grad_(True), 6))


def test_gram_bound_checks_arguments():
    with pytest.raises(RuntimeError, match="steps must be in"):
        torch.ops.convspectra.gram_bound(torch.randn(3, 3), 61)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        torch.ops.convspectra.gram_bound(torch.randn(3), 2)
    with pytest.raises(RuntimeError, match="float32/float64/complex64/complex128"):
        torch.ops.convspectra.gram_bound(torch.ones(3, 3, dtype=torch.int32), 2)
    with pytest.raises(ValueError, match="steps must be <= 60"):
        cs.spectral_norm(torch.randn(2, 2, 3, 3), (5, 5), method="gram", steps=61)
