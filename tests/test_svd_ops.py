"""The fused batched SVD ops against torch.linalg (LAPACK), plus identities
that must hold (reconstruction, orthonormality), gradcheck and opcheck."""

import pytest
import torch

import convspectra as cs
from helpers import DTYPES, DEVICES, rel_err
from helpers import dtype_tol as tol

# Square, tall, wide, 1 x 1, vectors, and sizes on both sides of the CPU's
# Jacobi / LAPACK crossover (min(m, n) = 8).
SHAPES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (5, 3), (8, 8), (8, 13), (13, 8), (9, 9), (16, 16),
          (32, 20), (20, 32), (33, 33), (64, 64), (100, 37), (130, 130)]


def identity_like(k, dtype, device):
    return torch.eye(k, dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_svdvals_matches_lapack(device, dtype, shape):
    A = torch.randn(3, *shape, dtype=dtype, device=device)
    ours = cs.linalg.svdvals(A)
    ref = torch.linalg.svdvals(A.cpu().to(torch.complex128 if dtype.is_complex else torch.float64))
    assert ours.shape == (3, min(shape))
    assert ours.dtype == dtype.to_real()
    assert ours.device == A.device
    assert rel_err(ours, ref) < tol(dtype)
    # descending
    assert bool((ours[..., :-1] >= ours[..., 1:]).all())


@pytest.mark.parametrize("device", DEVICES)
def test_svdvals_leading_batch_dims(device):
    A = torch.randn(2, 3, 4, 6, 5, dtype=torch.complex128, device=device)
    ours = cs.linalg.svdvals(A)
    assert ours.shape == (2, 3, 4, 5)
    assert rel_err(ours, torch.linalg.svdvals(A)) < 1e-12
    # non-contiguous input
    At = A.transpose(-1, -2)
    assert rel_err(cs.linalg.svdvals(At), torch.linalg.svdvals(At)) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (6, 3), (3, 6), (12, 12), (40, 25), (25, 40)])
def test_svd_reconstructs_and_is_orthonormal(device, dtype, shape):
    A = torch.randn(4, *shape, dtype=dtype, device=device)
    U, S, Vh = cs.linalg.svd(A)
    k = min(shape)
    assert U.shape == (4, shape[0], k) and S.shape == (4, k) and Vh.shape == (4, k, shape[1])
    rebuilt = U @ torch.diag_embed(S.to(dtype)) @ Vh
    assert rel_err(rebuilt, A) < 10 * tol(dtype)
    assert rel_err(U.mH @ U, identity_like(k, dtype, device).expand(4, k, k)) < 10 * tol(dtype)
    assert rel_err(Vh @ Vh.mH, identity_like(k, dtype, device).expand(4, k, k)) < 10 * tol(dtype)
    assert rel_err(S, torch.linalg.svdvals(A)) < tol(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(5, 5), (7, 4), (4, 7), (12, 12)])
def test_rank_deficient(device, dtype, shape):
    m, n = shape
    r = 2
    A = torch.randn(3, m, r, dtype=dtype, device=device) @ torch.randn(3, r, n, dtype=dtype, device=device)
    A[0] = 0  # the all-zero matrix too
    S = cs.linalg.svdvals(A)
    ref = torch.linalg.svdvals(A)
    assert (S - ref).abs().max() < 1e-12 * ref.max()
    U, S2, Vh = cs.linalg.svd(A)
    k = min(m, n)
    eye = identity_like(k, dtype, device).expand(3, k, k)
    # U stays orthonormal even where singular values vanish
    assert (U.mH @ U - eye).abs().max() < 1e-10
    assert (U @ torch.diag_embed(S2.to(dtype)) @ Vh - A).abs().max() < 1e-10 * (1 + A.abs().max())


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batches_follow_torch(device):
    for shape in [(0, 3, 4), (2, 0, 3), (2, 3, 0)]:
        A = torch.randn(shape, device=device)
        assert cs.linalg.svdvals(A).shape == torch.linalg.svdvals(A).shape
        U, S, Vh = cs.linalg.svd(A)
        U2, S2, Vh2 = torch.linalg.svd(A, full_matrices=False)
        assert (U.shape, S.shape, Vh.shape) == (U2.shape, S2.shape, Vh2.shape)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 4), (3, 6), (20, 20)])
def test_nonfinite_gives_nan_and_terminates(device, dtype, shape):
    A = torch.randn(3, *shape, dtype=dtype, device=device)
    A[1, 0, 0] = float("nan")
    A[2, -1, -1] = float("inf")
    S = cs.linalg.svdvals(A)
    assert torch.isnan(S[1]).all() and torch.isnan(S[2]).all()
    assert rel_err(S[0], torch.linalg.svdvals(A[0])) < tol(dtype)
    U, S2, Vh = cs.linalg.svd(A)
    assert torch.isnan(S2[1:]).all() and torch.isnan(U[1:]).all() and torch.isnan(Vh[1:]).all()
    assert torch.isfinite(S2[0]).all()


@pytest.mark.parametrize("device", DEVICES)
def test_extreme_scales(device):
    # The power-of-two prescale keeps Jacobi's squared norms finite.
    for scale in (1e-30, 1e30):
        A = torch.randn(5, 6, 6, device=device) * scale
        ref = torch.linalg.svdvals(A.double())
        assert rel_err(cs.linalg.svdvals(A), ref) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (11, 10), (9, 12)])
def test_svdvals_gradcheck(device, dtype, shape):
    A = torch.randn(2, *shape, dtype=dtype, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(cs.linalg.svdvals, (A,))
    # the op's own registered backward (used when called directly)
    assert torch.autograd.gradcheck(torch.ops.convspectra.svdvals, (A,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
# Jacobi (k <= 8) and LAPACK (k > 8) paths of the CPU kernel
@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6), (12, 10), (10, 12)])
def test_svd_gradcheck_gauge_invariant(device, dtype, shape):
    A = torch.randn(2, *shape, dtype=dtype, device=device, requires_grad=True)

    def f(A):
        U, S, Vh = cs.linalg.svd(A)
        # invariant to the phase of each singular vector pair
        return U @ Vh, S, U.abs() ** 2, Vh.abs() ** 2

    assert torch.autograd.gradcheck(f, (A,))


def test_svdvals_gradient_with_repeated_values():
    # A loss of S alone has a finite gradient even for repeated singular values.
    A = torch.eye(4, dtype=torch.float64, requires_grad=True)
    cs.linalg.svdvals(A).sum().backward()
    assert torch.isfinite(A.grad).all()
    assert torch.allclose(A.grad, torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.float64])
def test_opcheck(device, dtype):
    for shape in [(3, 4, 4), (2, 5, 3), (1, 2, 9, 12)]:
        A = torch.randn(shape, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.convspectra.svdvals.default, (A,))
        torch.library.opcheck(torch.ops.convspectra.svd.default, (A,))
        Ag = A.clone().requires_grad_(True)
        torch.library.opcheck(torch.ops.convspectra.svdvals.default, (Ag,))
        torch.library.opcheck(torch.ops.convspectra.svd.default, (Ag,))
