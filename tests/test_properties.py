"""Property-based tests: hypothesis draws structured matrices and kernels
(rank-deficient, duplicated, scaled, clustered, with complex phases) and every
op is compared with LAPACK or the dense operator.

Profiles: "ci" (the default: derandomised, a few dozen examples per property,
seconds) and "thorough" for local runs:
    HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest tests/test_properties.py
"""

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convspectra as cs
from helpers import dense_svdvals
from structured import KERNEL_KINDS, MATRIX_KINDS, structured_kernel, structured_matrix

settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def eps(dtype) -> float:
    return torch.finfo(dtype.to_real()).eps


def wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


@st.composite
def matrices(draw, max_size=12):
    kind = draw(st.sampled_from(MATRIX_KINDS))
    m = draw(st.integers(1, max_size))
    n = draw(st.integers(1, max_size))
    dtype = draw(st.sampled_from(DTYPES))
    limit = 30 if dtype.to_real() == torch.float32 else 300
    scale = 10.0 ** draw(st.integers(-limit, limit))
    seed = draw(st.integers(0, 2**31 - 1))
    A = structured_matrix(kind, m, n, dtype, torch.Generator().manual_seed(seed), scale)
    return kind, A


@given(matrices())
def test_svd_matches_lapack(case):
    kind, A = case
    m, n = A.shape
    tol = 8 * max(m, n) * eps(A.dtype)
    ref = torch.linalg.svdvals(A.to(wide(A.dtype)))
    U, S, Vh = cs.linalg.svd(A)
    for values in (S, cs.linalg.svdvals(A)):
        assert bool(torch.isfinite(values).all()), kind
        assert float((values.double() - ref).abs().max()) <= tol * float(ref[0]), kind
    k = min(m, n)
    eye = torch.eye(k, dtype=A.dtype)
    assert float((U.mH @ U - eye).abs().max()) <= tol, kind
    assert float((Vh @ Vh.mH - eye).abs().max()) <= tol, kind


@given(matrices(), st.integers(1, 8))
def test_gram_bound_is_an_upper_bound(case, steps):
    kind, A = case
    bound = float(torch.ops.convspectra.gram_bound(A, steps))
    norm = float(torch.linalg.matrix_norm(A.to(wide(A.dtype)), 2))
    k = min(A.shape)
    slack = 8 * max(A.shape) * eps(A.dtype)
    assert norm * (1 - slack) <= bound <= norm * k ** (1 / 2 ** (steps + 1)) * (1 + slack), kind


@given(matrices(max_size=10))
def test_cayley_is_orthonormal_where_well_posed(case):
    """Orthonormal to cond(I + A) eps, the forward error of a stable solver
    (a tall W's system is numerically singular when ||W||^2 eps >= 1)."""
    kind, W = case
    if W.abs().max() > 1e4:
        W = W / W.abs().max() * 1e4
    Wt = W.to(wide(W.dtype))
    Wt = Wt if Wt.shape[0] >= Wt.shape[1] else Wt.mH
    k = Wt.shape[1]
    B = torch.eye(k, dtype=Wt.dtype) + Wt[:k] - Wt[:k].mH + Wt[k:].mH @ Wt[k:]
    slack = 16 * max(W.shape) * eps(W.dtype) * float(torch.linalg.cond(B))
    if slack >= 0.1:
        return
    Q = cs.linalg.cayley(W)
    G = Q.mH @ Q if W.shape[0] >= W.shape[1] else Q @ Q.mH
    assert float((G - torch.eye(k, dtype=W.dtype)).abs().max()) <= slack, kind


@given(matrices(max_size=10), st.integers(0, 15))
def test_bjorck_matches_reference(case, iters):
    kind, W = case
    ours = cs.linalg.bjorck(W, iters)
    ref = cs.reference.bjorck(W.to(wide(W.dtype)), iters)
    assert bool(torch.isfinite(ours).all()), kind
    assert float((ours.to(ref.dtype) - ref).abs().max()) <= 1.5**iters * 16 * max(W.shape) * eps(W.dtype), kind


@st.composite
def kernels(draw):
    kind = draw(st.sampled_from(KERNEL_KINDS))
    c_out, c_in = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    k = draw(st.integers(1, 3))
    H, W = draw(st.integers(k, 7)), draw(st.integers(k, 7))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return kind, structured_kernel(kind, c_out, c_in, k, dtype, seed=draw(st.integers(0, 10_000))), (H, W)


@given(kernels())
def test_circular_spectrum_and_norms_match_the_dense_operator(case):
    kind, w, size = case
    tol = (2e-5 if w.dtype == torch.float32 else 1e-11)
    ref = dense_svdvals(w, size)
    scale = max(1.0, float(ref[0]))
    sv = cs.singular_values(w, size)
    assert float((sv.double() - ref[: sv.numel()]).abs().max()) <= tol * scale, kind
    for padding in ("circular", "zeros"):
        true = float(dense_svdvals(w, size, padding)[0])
        for method in ("certified", "gram", "sum_taps", "reshape", "l1"):
            assert float(cs.spectral_norm(w, size, padding, method)) >= true - tol * scale, (kind, padding, method)
        exact = float(cs.spectral_norm(w, size, padding, "exact"))
        # zero padding: Lanczos to its default tol = 1e-6 (relative, from below)
        lanczos = 1e-6 * true if padding == "zeros" else 0.0
        assert abs(exact - true) <= 10 * tol * scale + lanczos, (kind, padding)
