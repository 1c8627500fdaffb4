"""The fused Bjorck op: the SVD polar factor, the reference loop, gradients, opcheck."""

import pytest
import torch

import convspectra as cs
from helpers import DTYPES, DEVICES, rel_err
from helpers import dtype_tol as tol

# square, tall, wide, on both sides of the CPU's serial / batched split (m = 16)
# and, on a GPU, both sides of its 64-row register tile (m <= 128 stays in shared memory)
SHAPES = [(1, 1), (5, 5), (7, 3), (3, 7), (16, 16), (17, 17), (40, 40), (50, 36), (36, 50), (100, 90)]


def well_conditioned(batch, m, n, dtype, device):
    """Matrices with singular values in [0.5, 2]: 20 steps reach the polar factor."""
    U, _, Vh = torch.linalg.svd(torch.randn(batch, m, n, dtype=dtype, device=device), full_matrices=False)
    S = torch.linspace(0.5, 2.0, min(m, n), dtype=U.real.dtype, device=device)
    return (U * S.to(dtype)) @ Vh, U @ Vh


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bjorck_is_the_polar_factor(device, dtype, shape):
    W, polar = well_conditioned(3, *shape, dtype, device)
    Q = cs.linalg.bjorck(W)
    assert Q.shape == W.shape and Q.dtype == dtype and Q.device == W.device
    assert rel_err(Q, polar) < 10 * tol(dtype)
    assert rel_err(Q, cs.reference.bjorck(W)) < 10 * tol(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(6, 6), (9, 4), (4, 9), (40, 33)])
def test_few_steps_match_the_reference_loop(device, shape):
    # far from converged (a Gaussian matrix, 3 steps): the same iterates
    W = torch.randn(2, *shape, dtype=torch.float64, device=device)
    out = cs.linalg.bjorck(W, iters=3)
    assert rel_err(out, cs.reference.bjorck(W, iters=3)) < 1e-13
    assert rel_err(cs.linalg.bjorck(W, iters=0), W / cs.reference.gram_bound(W, 3)[..., None, None]) < 1e-14


@pytest.mark.parametrize("device", DEVICES)
def test_any_scale_converges(device):
    # the prescale is an upper bound of ||W||_2: tiny and huge matrices alike
    W, polar = well_conditioned(2, 8, 8, torch.float64, device)
    for s in (1e-30, 1e-3, 1e3, 1e30):
        assert rel_err(cs.linalg.bjorck(W * s), polar) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6), (34, 33), (33, 34)])
def test_bjorck_gradcheck(device, dtype, shape):
    W = torch.randn(2, *shape, dtype=dtype, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: cs.linalg.bjorck(w, iters=6), (W,), fast_mode=min(shape) > 8)
    G = torch.randn_like(W)
    (g,) = torch.autograd.grad((cs.linalg.bjorck(W) * G).real.sum(), W)
    (g_ref,) = torch.autograd.grad((cs.reference.bjorck(W) * G).real.sum(), W)
    assert rel_err(g, g_ref) < 1e-10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_bjorck_opcheck(device, dtype):
    for shape in [(3, 4, 4), (2, 6, 3), (2, 3, 6), (2, 40, 36)]:
        X = torch.randn(shape, dtype=dtype, device=device) / 10
        torch.library.opcheck(torch.ops.convspectra.bjorck.default, (X, 0))  # a fresh output, not X
        torch.library.opcheck(torch.ops.convspectra.bjorck_backward.default, (torch.randn_like(X), X, 0))
        torch.library.opcheck(torch.ops.convspectra.bjorck.default, (X, 5))
        torch.library.opcheck(torch.ops.convspectra.bjorck.default, (X.clone().requires_grad_(True), 5))
        torch.library.opcheck(torch.ops.convspectra.bjorck_backward.default, (torch.randn_like(X), X, 5))


@pytest.mark.parametrize("device", DEVICES)
def test_bjorck_reads_conjugate_views(device):
    A = torch.randn(3, 5, 4, dtype=torch.complex128, device=device)
    assert rel_err(cs.linalg.bjorck(A.mH), cs.reference.bjorck(A.mH.resolve_conj())) < 1e-12
    assert rel_err(cs.linalg.bjorck(A.conj()), cs.reference.bjorck(A.conj().resolve_conj())) < 1e-12


def test_bjorck_bad_input():
    with pytest.raises(ValueError, match="W must have at least 2 dimensions"):
        cs.linalg.bjorck(torch.randn(3))
    with pytest.raises(TypeError, match="W must have dtype"):
        cs.linalg.bjorck(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="iters must be an int"):
        cs.linalg.bjorck(torch.randn(3, 3), iters=2.5)
    with pytest.raises(ValueError, match="iters must be >= 0"):
        cs.linalg.bjorck(torch.randn(3, 3), iters=-1)
    with pytest.raises(ValueError, match="iters must be <= 1000"):
        cs.linalg.bjorck(torch.randn(3, 3), iters=10**6)
    with pytest.raises(RuntimeError, match="iters must be in"):
        torch.ops.convspectra.bjorck(torch.randn(3, 3), 5000)
    with pytest.raises(RuntimeError, match="grad and X shapes differ"):
        torch.ops.convspectra.bjorck_backward(torch.randn(3, 4), torch.randn(3, 3), 2)
    assert cs.linalg.bjorck(torch.randn(0, 3, 3)).shape == (0, 3, 3)
    assert torch.isnan(cs.linalg.bjorck(torch.full((1, 3, 3), float("nan")))).all()
    # a zero matrix has no polar factor: Bjorck leaves it at zero, without NaN
    assert torch.equal(cs.linalg.bjorck(torch.zeros(2, 3, 3)), torch.zeros(2, 3, 3))
