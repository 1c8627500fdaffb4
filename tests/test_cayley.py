"""The fused Cayley op against the reference, orthonormality and gradients."""

import pytest
import torch

import convspectra as cs
from helpers import DTYPES, DEVICES, rel_err
from helpers import dtype_tol as tol

# square, tall, wide, on both sides of the CPU's serial / batched split (n = 32)
SHAPES = [(1, 1), (4, 4), (6, 3), (3, 6), (32, 32), (40, 40), (50, 36), (36, 50)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_cayley_matches_reference_and_is_orthonormal(device, dtype, shape):
    W = torch.randn(3, *shape, dtype=dtype, device=device)
    Q = cs.linalg.cayley(W)
    assert Q.shape == W.shape and Q.dtype == dtype and Q.device == W.device
    assert rel_err(Q, cs.reference.cayley(W)) < 10 * tol(dtype)
    m, n = shape
    k = min(m, n)
    gram = Q.mH @ Q if m >= n else Q @ Q.mH
    assert (gram - torch.eye(k, dtype=dtype, device=device)).abs().max() < 10 * tol(dtype) * k
    # the auxiliary output is (I + A)^{-1}
    _, M = torch.ops.convspectra.cayley(W)
    Wt = W if m >= n else W.mH
    A = Wt[..., :k, :] - Wt[..., :k, :].mH + Wt[..., k:, :].mH @ Wt[..., k:, :]
    assert rel_err(M @ (torch.eye(k, dtype=dtype, device=device) + A), torch.eye(k, dtype=dtype, device=device)
                   .expand(3, k, k)) < 10 * tol(dtype) * k


@pytest.mark.parametrize("device", DEVICES)
def test_cayley_of_a_skew_matrix_is_its_classical_cayley_transform(device):
    # square W with W = S / 2 for skew S gives A = S: Q = (I + S)^{-1} (I - S)
    S = torch.randn(5, 5, dtype=torch.float64, device=device)
    S = S - S.T
    eye = torch.eye(5, dtype=torch.float64, device=device)
    expected = torch.linalg.solve(eye + S, eye - S)
    assert rel_err(cs.linalg.cayley(S / 2), expected) < 1e-13


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6), (34, 33), (33, 34)])
def test_cayley_gradcheck(device, dtype, shape):
    W = torch.randn(2, *shape, dtype=dtype, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(cs.linalg.cayley, (W,), fast_mode=min(shape) > 8)
    (g,) = torch.autograd.grad((cs.linalg.cayley(W) * torch.randn_like(W)).real.sum(), W)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_cayley_opcheck(device, dtype):
    for shape in [(3, 4, 4), (2, 6, 3), (2, 3, 6), (2, 40, 36)]:
        W = torch.randn(shape, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.convspectra.cayley.default, (W,))
        torch.library.opcheck(torch.ops.convspectra.cayley.default, (W.clone().requires_grad_(True),))
        Q, M = torch.ops.convspectra.cayley(W)
        torch.library.opcheck(torch.ops.convspectra.cayley_backward.default, (torch.randn_like(Q), W, M))


@pytest.mark.parametrize("device", DEVICES)
def test_kernels_read_conjugate_views_correctly(device):
    # A.mH of a complex tensor is a lazy view: the kernels must see the conjugate
    A = torch.randn(3, 5, 4, dtype=torch.complex128, device=device)
    Ah = A.mH
    U, S, Vh = cs.linalg.svd(Ah)
    assert rel_err(U @ torch.diag_embed(S.to(A.dtype)) @ Vh, Ah) < 1e-12
    assert rel_err(cs.linalg.cayley(Ah), cs.reference.cayley(Ah.resolve_conj())) < 1e-12
    W = torch.randn(3, 4, 4, dtype=torch.complex128, device=device)
    assert rel_err(cs.linalg.cayley(W.conj()), cs.reference.cayley(W.conj().resolve_conj())) < 1e-12


def test_cayley_bad_input():
    with pytest.raises(ValueError, match="W must have at least 2 dimensions"):
        cs.linalg.cayley(torch.randn(3))
    with pytest.raises(TypeError, match="W must have dtype"):
        cs.linalg.cayley(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="W must be a torch.Tensor"):
        cs.linalg.cayley([[1.0]])
    with pytest.raises(RuntimeError, match="float32/float64/complex64/complex128"):
        torch.ops.convspectra.cayley(torch.ones(3, 3, dtype=torch.float16))
    assert cs.linalg.cayley(torch.randn(0, 3, 3)).shape == (0, 3, 3)
    Q = cs.linalg.cayley(torch.full((1, 3, 3), float("nan")))
    assert torch.isnan(Q).all()
