"""The ops stay float32-accurate with TF32 switched on globally: their ATen
products (the batched fallbacks, forced here with
convspectra::_set_force_fallback, and the Cayley backward) run under
at::NoTF32Guard, as torch's own linalg backward does. TF32 products carry
errors of 2e-5 to 3e-4 here (measured with TF32-rounded inputs), float32 ones
of 1e-7 to 1e-6. On the CPU, where TF32 does not apply, the same checks run
as a baseline."""

import pytest
import torch

from helpers import DEVICES

ops = torch.ops.convspectra
TOL = 4e-6  # relative: float32 products reach 1e-7 to 1e-6 here, TF32 ones 2e-5 to 3e-4


@pytest.fixture
def tf32_everywhere():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


@pytest.fixture(params=[False, True], ids=["default", "forced"])
def forced(request):
    previous = ops._set_force_fallback(request.param)
    yield request.param
    ops._set_force_fallback(previous)


def rel(a, b):
    a, b = a.detach().cpu().to(b.dtype), b.detach().cpu()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("shape", [(4, 48, 40), (4, 24, 56), (2, 200, 180)])  # 200 x 180: past shared memory
def test_float32_accuracy_with_tf32_on(device, dtype, shape, tf32_everywhere, forced):
    wide = torch.complex128 if dtype.is_complex else torch.float64
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(shape, dtype=wide, generator=gen)
    A = (A / torch.linalg.matrix_norm(A, 2)[..., None, None]).to(dtype)  # ||A|| = 1, exact in float32 input
    Ad = A.to(wide)
    X = A.to(device)
    G = torch.randn(shape, dtype=wide, generator=gen)

    assert rel(ops.gram_bound(X, 4), ops.gram_bound(Ad, 4)) <= TOL
    assert rel(ops.svdvals(X), torch.linalg.svdvals(Ad)) <= TOL

    W = A / 2
    Q, M = ops.cayley(W.to(device))
    Qd, Md = ops.cayley(W.to(wide))
    assert rel(Q, Qd) <= TOL and rel(M, Md) <= TOL
    gW = ops.cayley_backward(G.to(dtype).to(device), W.to(device), M)
    assert rel(gW, ops.cayley_backward(G, W.to(wide), Md)) <= TOL

    iters = 8
    assert rel(ops.bjorck(X, iters), ops.bjorck(Ad, iters)) <= TOL
    g = ops.bjorck_backward(G.to(dtype).to(device), X, iters)
    assert rel(g, ops.bjorck_backward(G, Ad, iters)) <= TOL
