"""The Cayley map, Bjorck orthogonalisation and the Gram bound on structured
matrices and at extreme scales, against LAPACK-backed references."""

import pytest
import torch

import convspectra as cs
from helpers import DEVICES, DTYPES
from structured import MATRIX_KINDS, structured_batch

SHAPES = [(1, 1), (3, 3), (4, 4), (8, 8), (6, 3), (3, 6), (16, 16), (40, 40), (40, 24)]


def eps(dtype) -> float:
    return torch.finfo(dtype.to_real()).eps


def wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


def cayley_condition(W):
    """cond_2(I + A) of the Cayley system of each matrix, in double precision."""
    W = W.to(wide(W.dtype))
    if W.shape[-2] < W.shape[-1]:
        W = W.mH
    k = W.shape[-1]
    B = torch.eye(k, dtype=W.dtype) + W[..., :k, :] - W[..., :k, :].mH + W[..., k:, :].mH @ W[..., k:, :]
    return torch.linalg.cond(B)


def orthogonality_error(Q):
    m, n = Q.shape[-2:]
    G = Q.mH @ Q if m >= n else Q @ Q.mH
    return (G - torch.eye(min(m, n), dtype=Q.dtype, device=Q.device)).abs().amax((-2, -1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_cayley_structured_as_accurate_as_torch_inverse(device, dtype, kind):
    """Orthogonality within a small multiple of what torch.linalg.inv achieves
    in the same dtype, and the distance to the double-precision map within the
    forward error of a stable solver (cond(I + A) eps), at norms up to 1e4
    (float32) and 1e8 (float64), where unpivoted elimination broke."""
    scales = [1.0, 1e2, 1e4] if dtype.to_real() == torch.float32 else [1.0, 1e4, 1e8]
    for i, (m, n) in enumerate(SHAPES):
        for j, scale in enumerate(scales):
            W = structured_batch(kind, 8, m, n, dtype, seed=10 * i + j, scale=scale)
            slack = 16 * max(m, n) * eps(dtype)
            # a stable solver's forward error is cond(I + A) eps; where that reaches 1 the system is
            # numerically singular in W's dtype (a tall W's cond grows like ||W||^2): nothing is claimed
            cond = cayley_condition(W)
            posed = slack * cond < 0.1
            W, cond = W[posed], cond[posed]
            if not len(W):
                continue
            Q = cs.linalg.cayley(W.to(device)).cpu()
            e_ours = orthogonality_error(Q)
            try:
                e_torch = orthogonality_error(cs.reference.cayley(W))  # torch.inverse in W's own dtype
            except torch.linalg.LinAlgError:  # it can hit an exact zero pivot where this kernel does not
                e_torch = torch.full_like(e_ours, float("inf"))
            assert float(e_ours.max()) <= 4 * float(e_torch.max()) + slack, f"orthogonality {float(e_ours.max()):.3g}"
            assert bool((e_ours <= slack * cond).all()), f"orthogonality {float(e_ours.max()):.3g}"
            # distance to the map computed by torch.linalg.inv in double precision, where that one
            # is itself within its forward error (for float64 input it is no more accurate than this one)
            try:
                ref = cs.reference.cayley(W.to(wide(dtype)))
            except torch.linalg.LinAlgError:
                continue
            trusted = orthogonality_error(ref) <= slack * cond
            d_ours = (Q.to(ref.dtype) - ref).abs().amax((-2, -1))
            assert bool((d_ours <= 2 * slack * cond)[trusted].all()), f"distance {float(d_ours.max()):.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_cayley_issue_example(device):
    """A 3 x 3 float32 matrix with entries of order 1e4: NaN before pivoting."""
    W = torch.tensor([[15409.96, -2934.29, -21787.89], [5684.31, -10845.22, -13985.95],
                      [4033.47, 8380.26, -7192.58]], device=device)
    Q = cs.linalg.cayley(W).cpu()
    assert float(orthogonality_error(Q)) <= float(orthogonality_error(cs.reference.cayley(W.cpu())))
    assert float((Q.double() - cs.reference.cayley(W.cpu().double())).abs().max()) < 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_cayley_huge_entries_do_not_overflow_the_pivot(device):
    """|pivot|^2 overflows float32 above about 1e19; the reciprocal never forms it."""
    W = torch.randn(4, 6, 6, device=device) * 1e20
    W[:, range(6), range(6)] = 0  # skew part only in A: every pivot of I + A is large after the first swap
    Q = cs.linalg.cayley(W).cpu()
    assert bool(torch.isfinite(Q).all())
    assert float(orthogonality_error(Q).max()) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_bjorck_structured(device, dtype, kind):
    """Against the reference iteration in double precision, at every scale.
    Each step multiplies a singular value near zero by up to 1.5, rounding
    noise included, so rank-deficient input is compared within 1.5^iters
    times rounding."""
    big = 1e30 if dtype.to_real() == torch.float32 else 1e300
    iters = 12
    for i, (m, n) in enumerate(SHAPES):
        for j, scale in enumerate([1.0, 1 / big, big]):
            W = structured_batch(kind, 4, m, n, dtype, seed=10 * i + j, scale=scale)
            ours = cs.linalg.bjorck(W.to(device), iters).cpu()
            ref = cs.reference.bjorck(W.to(wide(dtype)), iters)
            assert bool(torch.isfinite(ours).all())
            assert float((ours.to(ref.dtype) - ref).abs().max()) <= 1.5**iters * 16 * max(m, n) * eps(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_gram_bound_structured_never_below_the_norm(device, dtype, kind):
    big = 1e30 if dtype.to_real() == torch.float32 else 1e300
    steps = 6
    for i, (m, n) in enumerate(SHAPES):
        for j, scale in enumerate([1.0, 1 / big, big]):
            W = structured_batch(kind, 4, m, n, dtype, seed=10 * i + j, scale=scale)
            bound = torch.ops.convspectra.gram_bound(W.to(device), steps).cpu().double()
            norm = torch.linalg.matrix_norm(W.to(wide(dtype)), 2)
            assert bool(torch.isfinite(bound).all())
            # the bound in the input's own precision: not below the norm by more than rounding
            assert bool((bound >= norm * (1 - 8 * max(m, n) * eps(dtype))).all())
            rank = min(m, n)
            assert bool((bound <= norm * rank ** (1 / 2 ** (steps + 1)) * (1 + 8 * max(m, n) * eps(dtype))).all())
