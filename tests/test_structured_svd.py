"""The fused SVD on structured matrices (rank-deficient, duplicated, zero
columns, clustered and repeated values, graded, extreme scales, structured
complex phases) against LAPACK in double precision, for the Jacobi sizes and
the LAPACK sizes alike: values to the dtype's accuracy relative to the largest
singular value, vectors orthonormal, U S V^H = A, NaN only for NaN input."""

import pytest
import torch

import convspectra as cs
from helpers import DEVICES, DTYPES
from structured import MATRIX_KINDS, structured_batch

# Jacobi on both sides of min(m, n) = 8 (the CPU's crossover to LAPACK), square, tall, wide.
SHAPES = [(1, 1), (2, 2), (3, 3), (4, 4), (3, 7), (7, 3), (5, 8), (8, 8), (8, 5), (9, 9), (12, 20)]
BATCH = 24


def eps(dtype) -> float:
    return torch.finfo(dtype.to_real()).eps


def scales(dtype):
    big = 1e30 if dtype in (torch.float32, torch.complex64) else 1e300
    return [1.0, 1 / big, big]


def check_values(S, A, dtype):
    """max |s - s_lapack| <= C eps s_max, per matrix."""
    ref = torch.linalg.svdvals(A.cpu().to(torch.complex128 if dtype.is_complex else torch.float64))
    m, n = A.shape[-2:]
    bound = 8 * max(m, n) * eps(dtype) * ref[..., :1]
    err = (S.cpu().double() - ref).abs()
    assert bool(torch.isfinite(S).all()), "non-finite singular values for finite input"
    assert bool((err <= bound).all()), f"max error {float((err / ref[..., :1].clamp_min(1e-300)).max()):.3g} x s_max"
    assert bool((S[..., :-1] >= S[..., 1:]).all()), "not descending"
    assert bool((S >= 0).all())


def structured_inputs(kind, dtype, device):
    """A batch of the kind for every shape and scale: yields (m, n, A)."""
    for i, (m, n) in enumerate(SHAPES):
        for j, scale in enumerate(scales(dtype)):
            yield m, n, structured_batch(kind, BATCH, m, n, dtype, seed=100 * i + j, scale=scale).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_svdvals_structured(device, dtype, kind):
    for _, _, A in structured_inputs(kind, dtype, device):
        check_values(cs.linalg.svdvals(A), A, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_svd_structured(device, dtype, kind):
    for m, n, A in structured_inputs(kind, dtype, device):
        U, S, Vh = cs.linalg.svd(A)
        check_values(S, A, dtype)
        k = min(m, n)
        tol = 8 * max(m, n) * eps(dtype)
        assert bool(((S - cs.linalg.svdvals(A)).abs() <= tol * S[..., :1]).all()), "svd and svdvals disagree"
        eye = torch.eye(k, dtype=dtype, device=device)
        assert float((U.mH @ U - eye).abs().max()) <= tol, "U not orthonormal"
        assert float((Vh @ Vh.mH - eye).abs().max()) <= tol, "V not orthonormal"
        # reconstruction relative to ||A||_2, computed where it cannot overflow
        norm = S[..., :1, None].clamp_min(torch.finfo(S.dtype).tiny)
        rebuilt = (U * (S / norm[..., 0]).unsqueeze(-2).to(dtype)) @ Vh
        assert float((rebuilt - A / norm.to(dtype)).abs().max()) <= tol, "U S V^H != A"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_only_from_nan_inf(device, dtype):
    """A non-finite entry gives NaN for its own matrix, and only for it."""
    for m, n in [(3, 3), (8, 8), (5, 12)]:
        A = structured_batch("identical_rows", 4, m, n, dtype, seed=m).to(device)
        A[1, 0, 0] = float("nan")
        A[2, -1, -1] = float("inf")
        for S in (cs.linalg.svdvals(A), cs.linalg.svd(A)[1]):
            assert bool(S[1:3].isnan().all())
            assert bool(torch.isfinite(S[[0, 3]]).all())


def test_issue_examples():
    """The rank-one example that returned [nan, inf, nan, 0]."""
    A = torch.tensor([[-1.0898, 0.5474, -1.2643, -0.3239]] * 4)
    S = cs.linalg.svdvals(A)
    ref = torch.linalg.svdvals(A.double())
    assert bool(torch.isfinite(S).all())
    assert float((S.double() - ref).abs().max()) <= 1e-6 * float(ref[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_tall_columns_keep_the_dtype_accuracy(device, dtype):
    """Column norms and inner products over 2^18 rows are summed in double: a
    float32 sum would be off by about rows * eps (the spectrum of a layer with
    many output channels and few inputs)."""
    A = torch.randn(2, 1 << 18, 3, dtype=dtype, device=device)
    ref = torch.linalg.svdvals(A.cpu().to(torch.complex128 if dtype.is_complex else torch.float64))
    S = cs.linalg.svdvals(A).cpu().double()
    assert float(((S - ref).abs() / ref[..., :1]).max()) < 16 * eps(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_scale(device, dtype):
    """A matrix whose largest entry is subnormal: the power-of-two prescale is
    applied in two factors (one alone overflowed, and the result was NaN)."""
    tiny = 1e-40 if dtype.to_real() == torch.float32 else 1e-310
    A = structured_batch("gaussian", 6, 5, 4, dtype, seed=3, scale=tiny).to(device)
    ref = torch.linalg.svdvals(A.cpu().to(torch.complex128 if dtype.is_complex else torch.float64))
    for S in (cs.linalg.svdvals(A), cs.linalg.svd(A)[1]):
        assert bool(torch.isfinite(S).all())
        # subnormal inputs carry fewer digits: compare at the precision they have
        assert float(((S.cpu().double() - ref).abs() / ref[..., :1]).max()) < 1e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_singular_values_keep_their_relative_accuracy(device, dtype):
    """Jacobi's strength: diag(1, 1e-13, 3e-20) (float32) or diag(1, 1e-140,
    3e-200) (float64) come back exact, not rounded to zero, and their vectors
    stay orthonormal."""
    values = [1.0, 1e-13, 3e-20] if dtype.to_real() == torch.float32 else [1.0, 1e-140, 3e-200]
    D = torch.diag(torch.tensor(values, dtype=torch.float64)).to(dtype)
    Q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0].to(dtype)  # a permuted, rotated copy too
    for A in (D, D[[2, 0, 1]]):
        A = A.to(device)
        U, S, Vh = cs.linalg.svd(A)
        expected = torch.tensor(values, dtype=torch.float64)
        for s in (S, cs.linalg.svdvals(A)):
            assert float(((s.cpu().double() - expected).abs() / expected).max()) < 4 * eps(dtype)
        eye = torch.eye(3, dtype=dtype, device=device)
        assert float((U.mH @ U - eye).abs().max()) < 8 * eps(dtype)
        assert float((Vh @ Vh.mH - eye).abs().max()) < 8 * eps(dtype)
    S = cs.linalg.svdvals((Q @ D).to(device))  # rotated: only accuracy relative to the largest value is promised
    assert float((S.cpu().double() - torch.tensor(values, dtype=torch.float64)).abs().max()) < 8 * eps(dtype)
