"""Every branch of every op on small inputs. With
convspectra::_set_force_fallback(True) each op takes the branch it otherwise
keeps for large matrices (batched ATen products, the CUDA SVD's global
scratch); with a one-byte convspectra::_set_scratch_budget every bounded
buffer works in waves of one matrix and the Bjorck backward checkpoints its
iterates. With convspectra::_set_cpu_capability the CPU kernels run the copy of
their serial loops compiled for each instruction set this CPU has (cpu/isa.h).
Each result is compared with double precision (torch.linalg, or the op's
formula in torch), and with the default branches."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import DEVICES, DTYPES
from structured import structured_batch

ops = torch.ops.convspectra

KINDS = ("gaussian", "identical_rows", "zero_cols", "rank_one", "clustered", "graded_rows", "phase_structured")
# tall, wide, square; odd sizes; sizes where the defaults take the per-matrix kernels
SHAPES = [(1, 1), (3, 3), (6, 3), (3, 6), (8, 8), (9, 7), (5, 12)]
CPU_ISAS = ("default", "avx2", "avx512")
MODES = ["forced", "tiny_budget", "forced_tiny_budget"] + [f"isa_{isa}" for isa in CPU_ISAS]


def cpu_allows(isa: str) -> bool:
    """Whether this CPU (and ATEN_CPU_CAPABILITY) allow the copies for ``isa``."""
    try:
        previous = ops._set_cpu_capability(isa)
    except RuntimeError:
        return False
    ops._set_cpu_capability(previous)
    return True


@pytest.fixture(params=MODES)
def mode(request):
    """The switches of one mode, restored afterwards (also when a test fails)."""
    isa = request.param.removeprefix("isa_") if request.param.startswith("isa_") else ""
    if isa and not cpu_allows(isa):
        pytest.skip(f"this CPU (or ATEN_CPU_CAPABILITY) does not allow {isa}")
    force = ops._set_force_fallback("forced" in request.param)
    budget = ops._set_scratch_budget(1 if "tiny_budget" in request.param else 0)
    previous_isa = ops._set_cpu_capability(isa)
    yield request.param
    ops._set_force_fallback(force)
    ops._set_scratch_budget(budget)
    ops._set_cpu_capability(previous_isa)


def with_defaults(fn, *args):
    """fn(*args) with the default branches, budget and instruction set."""
    force, budget = ops._set_force_fallback(False), ops._set_scratch_budget(0)
    isa = ops._set_cpu_capability("")
    try:
        return fn(*args)
    finally:
        ops._set_force_fallback(force)
        ops._set_scratch_budget(budget)
        ops._set_cpu_capability(isa)


def eps(dtype) -> float:
    return torch.finfo(dtype.to_real()).eps


def wide(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


def cases(dtype, batch=3):
    for i, kind in enumerate(KINDS):
        for j, (m, n) in enumerate(SHAPES):
            yield structured_batch(kind, batch, m, n, dtype, seed=100 * i + j)


def max_err(a, b):
    return float((a.detach().cpu().to(b.dtype) - b.detach()).abs().max()) if a.numel() else 0.0


def eye_err(Q):
    m, n = Q.shape[-2:]
    G = Q.mH @ Q if m >= n else Q @ Q.mH
    return max_err(G, torch.eye(min(m, n), dtype=G.dtype).expand_as(G.cpu()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_svd(device, dtype, mode):
    for A in cases(dtype):
        m, n = A.shape[-2:]
        tol = 64 * max(m, n) * eps(dtype)
        ref = torch.linalg.svdvals(A.to(wide(dtype)))
        scale = float(ref.max())
        S = ops.svdvals(A.to(device))
        assert max_err(S, ref) <= tol * scale
        assert max_err(S, with_defaults(ops.svdvals, A.to(device)).cpu()) <= tol * scale
        U, S2, Vh = ops.svd(A.to(device))
        assert max_err(S2, ref) <= tol * scale
        assert max_err(U @ torch.diag_embed(S2.to(U.dtype)) @ Vh, A.to(wide(dtype))) <= tol * scale
        assert eye_err(U.to(wide(dtype))) <= tol and eye_err(Vh.to(wide(dtype))) <= tol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_svd_of_non_finite_matrices(device, dtype, mode):
    A = structured_batch("gaussian", 4, 9, 7, dtype, seed=1)
    A[1, 2, 3] = float("nan")
    A[2, 0, 0] = float("inf")
    S = ops.svdvals(A.to(device)).cpu()
    assert bool(S[1:3].isnan().all()) and bool(S[[0, 3]].isfinite().all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_bound(device, dtype, mode):
    steps = 6
    for A in cases(dtype):
        m, n = A.shape[-2:]
        tol = 64 * max(m, n) * eps(dtype)
        norm = torch.linalg.matrix_norm(A.to(wide(dtype)), 2)
        bound = ops.gram_bound(A.to(device), steps).cpu().double()
        assert bool((bound >= norm * (1 - tol)).all())
        assert bool((bound <= norm * min(m, n) ** (1 / 2 ** (steps + 1)) * (1 + tol)).all())
        default = with_defaults(ops.gram_bound, A.to(device), steps).cpu().double()
        assert bool(((bound - default).abs() <= tol * norm).all())


def cayley_double(W):
    """Q and M of the Cayley map in double precision, from its formula."""
    W = W.to(wide(W.dtype))
    wide_input = W.shape[-2] < W.shape[-1]
    if wide_input:
        W = W.mH
    n = W.shape[-1]
    U, V = W[..., :n, :], W[..., n:, :]
    eye = torch.eye(n, dtype=W.dtype)
    M = torch.linalg.inv(eye + U - U.mH + V.mH @ V)
    Q = torch.cat([2 * M - eye, -2 * V @ M], -2)
    return (Q.mH if wide_input else Q), M


def normalised(A):
    """A / max |a_ij|: ||A||_2 <= sqrt(m n), so cond(I + A) stays moderate."""
    return A / A.abs().amax((-2, -1), keepdim=True).clamp_min(1e-30)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cayley_and_backward(device, dtype, mode):
    for A in cases(dtype):
        m, n = A.shape[-2:]
        W = normalised(A)
        tol = 256 * max(m, n) ** 2 * eps(dtype)
        Q, M = ops.cayley(W.to(device))
        Q_ref, M_ref = cayley_double(W)
        assert max_err(Q, Q_ref) <= tol and max_err(M, M_ref) <= tol
        Q_def, M_def = with_defaults(ops.cayley, W.to(device))
        assert max_err(Q, Q_def.cpu().to(Q_ref.dtype)) <= tol
        G = structured_batch("gaussian", W.shape[0], m, n, dtype, seed=m * n)
        gW = ops.cayley_backward(G.to(device), W.to(device), M)
        Wd = W.to(wide(dtype)).requires_grad_(True)
        (g_ref,) = torch.autograd.grad((cayley_double(Wd)[0] * G.to(wide(dtype)).conj()).real.sum(), Wd)
        assert max_err(gW, g_ref) <= tol * max(1.0, float(g_ref.abs().max()))


def bjorck_double(X, iters):
    X = X.to(wide(X.dtype))
    wide_input = X.shape[-2] < X.shape[-1]
    if wide_input:
        X = X.mH
    for _ in range(iters):
        X = 1.5 * X - 0.5 * X @ (X.mH @ X)
    return X.mH if wide_input else X


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("iters", [1, 6, 10])  # 10: checkpoint segments of 4, 4 and 2 steps
def test_bjorck_and_backward(device, dtype, iters, mode):
    for A in cases(dtype):
        m, n = A.shape[-2:]
        X = A / torch.linalg.matrix_norm(A.to(wide(dtype)), 2).clamp_min(1e-30)[..., None, None].to(dtype)
        # each step multiplies the rounding of a singular value near zero by up to 1.5
        tol = 1.5**iters * 64 * max(m, n) * eps(dtype)
        Y = ops.bjorck(X.to(device), iters)
        assert max_err(Y, bjorck_double(X, iters)) <= tol
        assert max_err(Y, with_defaults(ops.bjorck, X.to(device), iters).cpu().to(wide(dtype))) <= tol
        G = structured_batch("gaussian", X.shape[0], m, n, dtype, seed=m * n)
        g = ops.bjorck_backward(G.to(device), X.to(device), iters)
        Xd = X.to(wide(dtype)).requires_grad_(True)
        (g_ref,) = torch.autograd.grad((bjorck_double(Xd, iters) * G.to(wide(dtype)).conj()).real.sum(), Xd)
        scale = max(1.0, float(g_ref.abs().max()))
        assert max_err(g, g_ref) <= tol * scale
        default = with_defaults(ops.bjorck_backward, G.to(device), X.to(device), iters).cpu().to(wide(dtype))
        assert max_err(g, default) <= tol * scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128])
def test_opcheck(device, dtype, mode):
    for shape in [(3, 4, 4), (2, 6, 3), (2, 3, 6)]:
        A = torch.randn(shape, dtype=dtype, device=device) / 4
        torch.library.opcheck(ops.svdvals.default, (A,))
        torch.library.opcheck(ops.svd.default, (A,))
        torch.library.opcheck(ops.gram_bound.default, (A, 5))
        torch.library.opcheck(ops.cayley.default, (A,))
        Q, M = ops.cayley(A)
        torch.library.opcheck(ops.cayley_backward.default, (torch.randn_like(Q), A, M))
        torch.library.opcheck(ops.bjorck.default, (A, 5))
        torch.library.opcheck(ops.bjorck_backward.default, (torch.randn_like(A), A, 5))


@pytest.mark.parametrize("device", DEVICES)
def test_forcing_takes_the_batched_aten_branches(device):
    """The switch reaches the kernels: the ATen products show up in the
    profile only when forced (small matrices take the per-matrix kernels)."""
    A = torch.randn(2, 4, 3, dtype=torch.float64, device=device) / 4

    def aten_ops():
        with torch.profiler.profile() as prof:
            ops.gram_bound(A, 3)
            ops.cayley(A)
            ops.bjorck(A, 2)
            ops.bjorck_backward(A, A, 2)
            if device == "cpu":  # the CUDA SVD's fallback is its global scratch: no ATen call
                ops.svdvals(A)
        return {e.name for e in prof.events()}

    default = with_defaults(aten_ops)
    force = ops._set_force_fallback(True)
    try:
        forced = aten_ops()
    finally:
        ops._set_force_fallback(force)
    expected = {"aten::linalg_vector_norm", "aten::linalg_inv", "aten::baddbmm"}
    if device == "cpu":
        expected.add("aten::linalg_svdvals")
    assert expected <= forced
    assert not expected & default


def test_switches_return_their_previous_value():
    force = ops._set_force_fallback(True)
    try:
        assert ops._set_force_fallback(False) is True
        assert ops._set_force_fallback(False) is False
    finally:
        ops._set_force_fallback(force)
    budget = ops._set_scratch_budget(1)
    try:
        assert ops._set_scratch_budget(7) == 1
        assert ops._set_scratch_budget(0) == 7
        default = ops._set_scratch_budget(0)
        assert default == 256 << 20
    finally:
        ops._set_scratch_budget(budget)
    with pytest.raises(RuntimeError, match="bytes must be >= 0"):
        ops._set_scratch_budget(-1)


def test_environment_variable_sets_the_initial_value():
    code = "import torch, convspectra; print(torch.ops.convspectra._set_force_fallback(False))"
    for value, expected in (("1", "True"), ("0", "False")):
        env = dict(os.environ, CONVSPECTRA_FORCE_FALLBACK=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128])
def test_bjorck_backward_in_waves_of_stored_iterates(device, dtype):
    """A budget that holds all iterates of two matrices: the batched backward
    runs waves of 2, 2 and 1 without checkpoints, and agrees with one wave."""
    iters, (m, n) = 7, (6, 4)
    A = structured_batch("gaussian", 5, m, n, dtype, seed=3)
    X = (A / torch.linalg.matrix_norm(A.to(wide(dtype)), 2)[..., None, None].to(dtype)).to(device)
    G = torch.randn_like(X)
    matrix_bytes = m * n * X.element_size()
    force = ops._set_force_fallback(True)
    try:
        whole = ops.bjorck_backward(G, X, iters)
        budget = ops._set_scratch_budget(2 * iters * matrix_bytes)
        try:
            waves = ops.bjorck_backward(G, X, iters)
        finally:
            ops._set_scratch_budget(budget)
    finally:
        ops._set_force_fallback(force)
    assert max_err(waves, whole.cpu()) <= 64 * eps(dtype)


def test_cpu_capability_switch_names_its_argument():
    with pytest.raises(RuntimeError, match="name must be"):
        ops._set_cpu_capability("sse9")
    assert ops._cpu_capability() in CPU_ISAS


def test_cpu_capability_follows_aten():
    """ATEN_CPU_CAPABILITY=default turns the vector copies off as it does ATen's."""
    code = textwrap.dedent(
        """
        import torch, convspectra
        print(torch.ops.convspectra._cpu_capability())
        try:
            torch.ops.convspectra._set_cpu_capability("avx2")
        except RuntimeError as e:
            print("refused" if "allows at most 'default'" in str(e) else str(e))
        """
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["default", "refused"]
