"""Spectral norms and bounds against the dense operators (docs/math.md §4.2, §11), and
singular value clipping."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import convspectra as cs
from helpers import DEVICES, dense_svdvals, rel_err
from structured import structured_kernel

CASES = [(4, 3, 3, 3, 6, 7), (3, 5, 2, 2, 5, 6), (6, 6, 5, 5, 8, 8), (2, 4, 4, 3, 7, 5), (5, 5, 1, 1, 4, 4)]
IDS = ["x".join(map(str, c)) for c in CASES]


def dense_norm(weight, size, padding):
    return dense_svdvals(weight, size, padding)[0]


def full_conv_norm(weight, size):
    """||T|| of the 'full' zero-padded conv (output H+k-1), dense."""
    c_in = weight.shape[1]
    H, W = size
    n = c_in * H * W
    kh, kw = weight.shape[-2:]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, c_in, H, W)
    out = F.conv2d(basis, weight.double().cpu(), padding=(kh - 1, kw - 1))
    return torch.linalg.matrix_norm(out.reshape(n, -1), ord=2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bounds_against_dense(device, case):
    c_out, c_in, kh, kw, H, W = case
    w = torch.randn(c_out, c_in, kh, kw, dtype=torch.float64, device=device)
    circ, same, full = dense_norm(w, (H, W), "circular"), dense_norm(w, (H, W), "zeros"), full_conv_norm(w, (H, W))
    eps = 1e-10
    # exact
    assert abs(cs.spectral_norm(w, (H, W)).item() / circ.item() - 1) < 1e-12
    assert abs(cs.spectral_norm(w, (H, W), "zeros").item() / same.item() - 1) < 1e-6
    # certified: above both zero paddings of this size
    cert = cs.spectral_norm(w, (H, W), "zeros", "certified").item()
    assert cert >= full.item() * (1 - eps) and full.item() >= same.item() * (1 - eps)
    # ... and exactly the circular norm on the (H+kh-1) x (W+kw-1) grid (docs/math.md §4.2)
    assert abs(cert / dense_norm(w, (H + kh - 1, W + kw - 1), "circular").item() - 1) < 1e-12
    assert abs(cs.spectral_norm(w, (H, W), "circular", "certified").item() / circ.item() - 1) < 1e-12
    # gram: an upper bound within 1 % of what it bounds
    g_circ = cs.spectral_norm(w, (H, W), method="gram").item()
    assert circ.item() * (1 - eps) <= g_circ <= 1.01 * circ.item()
    g_zero = cs.spectral_norm(w, (H, W), "zeros", "gram").item()
    assert cert * (1 - eps) <= g_zero <= 1.01 * cert
    # tap bounds: above every padding and size, and equal to their definitions (docs/math.md §4.2 (a)-(c))
    a = w.abs().sum((2, 3))
    definitions = {
        "sum_taps": torch.linalg.matrix_norm(w.permute(2, 3, 0, 1), ord=2).sum(),
        "reshape": (kh * kw) ** 0.5 * torch.minimum(torch.linalg.matrix_norm(w.reshape(c_out, -1), ord=2),
                                                    torch.linalg.matrix_norm(w.transpose(0, 1).reshape(c_in, -1), ord=2)),
        "l1": (a.sum(1).max() * a.sum(0).max()).sqrt(),
    }
    for method, expected in definitions.items():
        b = cs.spectral_norm(w, method=method).item()
        assert b >= cert * (1 - eps) and b >= circ.item() * (1 - eps), method
        assert b == pytest.approx(expected.item(), rel=1e-12), method
        assert b == pytest.approx(cs.spectral_norm(w, (H, W), "zeros", method).item())


def test_gram_steps_tighten_and_stay_above():
    w = torch.randn(8, 8, 3, 3, dtype=torch.float64)
    exact = cs.spectral_norm(w, (8, 8)).item()
    bounds = [cs.spectral_norm(w, (8, 8), method="gram", steps=s).item() for s in range(1, 9)]
    assert all(b >= exact * (1 - 1e-12) for b in bounds)
    assert all(a >= b * (1 - 1e-12) for a, b in zip(bounds, bounds[1:]))  # monotone
    assert bounds[-1] <= exact * 1.002


def test_gram_handles_scale_and_zero():
    w = torch.randn(4, 4, 3, 3) * 1e25  # squarings would overflow float32 without rescaling
    exact = cs.spectral_norm(w, (6, 6)).item()
    # an upper bound up to float32 rounding
    assert exact * (1 - 1e-6) <= cs.spectral_norm(w, (6, 6), method="gram").item() <= 1.01 * exact
    assert cs.spectral_norm(torch.zeros(3, 3, 3, 3), (5, 5), method="gram").item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,padding", [
    ("exact", "zeros"), ("certified", "zeros"), ("gram", "circular"), ("gram", "zeros"),
    ("sum_taps", "circular"), ("reshape", "zeros"), ("l1", "circular"),
])
def test_norm_gradcheck(device, method, padding):
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    kwargs = {"tol": 1e-13, "max_iter": 500} if method == "exact" else {}
    assert torch.autograd.gradcheck(lambda w: cs.spectral_norm(w, (5, 4), padding, method, **kwargs), (w,))


@pytest.mark.parametrize("device", DEVICES)
def test_zero_padded_norm_gradient_matches_dense(device):
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    cs.spectral_norm(w, (6, 5), "zeros", tol=1e-12).backward()
    w64 = w.detach().cpu().requires_grad_(True)
    dense_norm(w64, (6, 5), "zeros").backward()
    assert rel_err(w.grad, w64.grad) < 1e-6


def test_zero_padded_norm_iteration_cap():
    # capped early it still returns a lower bound (a Rayleigh quotient) and stops
    w = torch.randn(6, 6, 3, 3, dtype=torch.float64)
    exact = dense_norm(w, (8, 8), "zeros").item()
    for cap in (1, 2, 5):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est = cs.spectral_norm(w, (8, 8), "zeros", max_iter=cap).item()
        assert 0 < est <= exact * (1 + 1e-12)
        if cap == 1:  # one step cannot reach 1e-6: the caller is told
            assert any("max_iter=1 before tol=1e-06" in str(c.message) for c in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        assert cs.spectral_norm(w, (8, 8), "zeros").item() == pytest.approx(exact, rel=1e-6)


def test_norm_bad_arguments():
    w = torch.randn(3, 3, 3, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        cs.spectral_norm(w, (5, 5), method="power")
    with pytest.raises(ValueError, match="input_size is required for method='gram'"):
        cs.spectral_norm(w, method="gram")
    with pytest.raises(ValueError, match="tol must be a positive"):
        cs.spectral_norm(w, (5, 5), "zeros", tol=0.0)
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        cs.spectral_norm(w, (5, 5), "zeros", max_iter=0)
    with pytest.raises(TypeError, match="steps must be an int"):
        cs.spectral_norm(w, (5, 5), method="gram", steps=2.5)
    with pytest.raises(TypeError, match="weight must have dtype"):
        cs.spectral_norm(w.int(), method="l1")


# ---------------------------------------------------------------- clipping
@pytest.mark.parametrize("device", DEVICES)
def test_clip_without_crop_is_the_exact_projection(device):
    # kernel support == input size: nothing is cropped, so the layer's spectrum
    # must be exactly the clamped spectrum of the original (dense check)
    w = torch.randn(3, 4, 5, 6, dtype=torch.float64, device=device)
    sv = torch.linalg.svdvals(cs.reference.dense_operator(w.cpu(), (5, 6)))
    c = 0.5 * sv.max().item()
    out = cs.clip_singular_values(w, (5, 6), max_value=c)
    assert out.shape == w.shape and out.dtype == w.dtype and out.device == w.device
    sv_out = torch.linalg.svdvals(cs.reference.dense_operator(out.cpu(), (5, 6)))
    assert rel_err(sv_out, sv.clamp(max=c).sort(descending=True).values) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(8, 8), (7, 6)])
def test_clip_matches_reference_and_reports_norms(device, size):
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    out, norms = cs.clip_singular_values(w, size, max_value=1.0, return_norms=True)
    ref = cs.reference.clip_singular_values(w, size, max_value=1.0)
    assert rel_err(out, ref) < 1e-12
    assert norms["before"].item() == pytest.approx(dense_norm(w, size, "circular").item(), rel=1e-10)
    assert norms["projected"].item() == pytest.approx(1.0)
    assert norms["after_crop"].item() == pytest.approx(dense_norm(out, size, "circular").item(), rel=1e-10)
    # the crop only approximates the projection, but it moves towards the ball
    assert norms["after_crop"].item() < norms["before"].item()


def test_clip_inside_the_ball_is_unchanged():
    w = torch.randn(4, 4, 3, 3)
    w = w / (2 * cs.spectral_norm(w, (8, 8)))
    assert torch.equal(cs.clip_singular_values(w, (8, 8), max_value=1.0), w)


def test_clip_bad_arguments():
    w = torch.randn(3, 3, 3, 3)
    with pytest.raises(ValueError, match="max_value must be a positive"):
        cs.clip_singular_values(w, (5, 5), max_value=0)
    with pytest.raises(ValueError, match="max_value must be a positive"):
        cs.clip_singular_values(w, (5, 5), max_value=float("nan"))
    with pytest.raises(ValueError, match="larger than input_size"):
        cs.clip_singular_values(w, (2, 5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [59, 41])
def test_exact_zero_padded_norm_converges_on_a_near_degenerate_top_pair(seed, dtype):
    """Default-initialised 8-channel layers at 12x12 whose top two singular
    values differ by 5e-6 and 3e-5 (relative): a Lanczos restart from one Ritz
    vector stalled past 1000 applications here; the thick restart keeps the
    pair and converges in well under 200. Checked against the dense operator."""
    torch.manual_seed(seed)
    w = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False).weight.detach().double()
    top = dense_svdvals(w, (12, 12), padding="zeros")[:2]
    assert (top[0] - top[1]) / top[0] < 5e-5  # the cluster this test is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "reached max_iter" warning
        got = cs.spectral_norm(w.to(dtype), (12, 12), "zeros", max_iter=200)
    assert abs(float(got) / float(top[0]) - 1) <= (1e-10 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_zero_padded_norm_at_extreme_scales(dtype):
    """Homogeneous: 1e-30 to 1e30 kernels give the scaled norm (a float32 1e-30
    kernel used to give 0: the squares inside ||T y|| underflowed), and the
    gradient does not depend on the scale."""
    w = structured_kernel("rank_one", 3, 4, 3, torch.float64, seed=3)
    base = dense_norm(w, (6, 5), "zeros")
    w1 = w.to(dtype).requires_grad_()
    (g1,) = torch.autograd.grad(cs.spectral_norm(w1, (6, 5), "zeros"), w1)
    for scale in (1e-30, 1e-15, 1e15, 1e30):
        ws = (w * scale).to(dtype).requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = cs.spectral_norm(ws, (6, 5), "zeros")
        (g,) = torch.autograd.grad(value, ws)
        assert abs(float(value.detach()) / (float(base) * scale) - 1) <= (1e-10 if dtype == torch.float64 else 1e-5)
        torch.testing.assert_close(g, g1, rtol=1e-4, atol=1e-5 if dtype == torch.float32 else 1e-10)
