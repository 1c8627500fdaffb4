"""The public API on structured kernels (box, constant, duplicated and
expanded filters, rank one, zero, identity, centre only): spectra against the
dense operator for both paddings and strides, every norm method against the
dense norm (no bound below it), clipping, the penalty and the layers."""

import warnings

import pytest
import torch

import convspectra as cs
from helpers import DEVICES, dense_layer_operator, dense_svdvals
from structured import KERNEL_KINDS, structured_kernel

REAL = [torch.float32, torch.float64]
NONCHEAP = ("exact", "certified", "gram")


def tol(dtype) -> float:
    return 2e-5 if dtype == torch.float32 else 1e-11


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_circular_spectrum_structured(device, dtype, kind):
    for (c_out, c_in, k, H, W, s) in [(4, 3, 3, 8, 8, 1), (3, 5, 3, 6, 10, 1), (6, 2, 3, 8, 8, 2), (2, 2, 2, 4, 6, 1)]:
        w = structured_kernel(kind, c_out, c_in, k, dtype, seed=c_out).to(device)
        sv = cs.singular_values(w, (H, W), stride=s)
        ref = dense_svdvals(w, (H, W), "circular", s)[: sv.numel()]
        assert sv.shape == ref.shape
        assert float((sv.cpu().double() - ref).abs().max()) <= tol(dtype) * max(1.0, float(ref[0]))
        U, S, Vh = cs.conv_svd(w, (H, W))
        assert bool(torch.isfinite(S).all())
        rebuilt = U @ torch.diag_embed(S.to(U.dtype)) @ Vh
        assert float((rebuilt - cs.symbol(w, (H, W))).abs().max()) <= tol(dtype) * max(1.0, float(ref[0]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_zero_padded_spectrum_structured(device, dtype, kind):
    """The approximation is finite, non-negative, and keeps the exact
    Frobenius norm of the dense zero-padded operator."""
    for (c_out, c_in, k, H, W) in [(4, 3, 3, 8, 8), (3, 5, 3, 6, 10)]:
        w = structured_kernel(kind, c_out, c_in, k, dtype, seed=c_out).to(device)
        sv = cs.singular_values(w, (H, W), padding="zeros")
        ref = dense_svdvals(w, (H, W), "zeros")
        assert bool(torch.isfinite(sv).all()) and bool((sv >= 0).all())
        frob = float(ref.square().sum())
        assert abs(float(sv.double().square().sum()) - frob) <= 10 * tol(dtype) * max(1.0, frob)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_every_norm_method_structured(device, dtype, kind):
    """exact equals the dense norm; every bound is at least the dense norm."""
    for (c_out, c_in, k, H) in [(4, 3, 3, 8), (3, 3, 3, 16), (2, 6, 2, 6)]:
        w = structured_kernel(kind, c_out, c_in, k, dtype, seed=c_out).to(device)
        for padding in ("circular", "zeros"):
            true = float(dense_svdvals(w, (H, H), padding)[0])
            slack = tol(dtype) * max(1.0, true)
            for method in cs.norms.NORM_METHODS:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # Lanczos must converge on these
                    value = float(cs.spectral_norm(w, (H, H), padding, method))
                if method == "exact":  # zero padding: Lanczos to its default tol = 1e-6
                    lanczos = 1e-6 * true if padding == "zeros" else 0.0
                    assert abs(value - true) <= 10 * slack + lanczos, (padding, method, value, true)
                else:
                    assert value >= true - slack, (padding, method, value, true)


def test_issue_examples():
    box = torch.full((8, 8, 3, 3), 1 / 9)
    sv = cs.singular_values(box, (32, 32))
    assert bool(torch.isfinite(sv).all())
    assert abs(float(sv[0]) - 8.0) < 1e-5  # 8 channels summing 9 taps of 1/9 at w = 0
    torch.manual_seed(0)
    w = torch.randn(1, 3, 3, 3, dtype=torch.float64).repeat(3, 1, 1, 1)
    true = float(dense_svdvals(w, (16, 16))[0])
    assert abs(float(cs.spectral_norm(w, (16, 16))) - true) < 1e-10 * true
    clipped = cs.clip_singular_values(w, (16, 16))
    assert bool(torch.isfinite(clipped).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_clip_structured(device, kind):
    """Finite; without a crop (a kernel as large as the grid) the projection
    is exact: every dense singular value min(sigma, 1)."""
    H = 4
    w = structured_kernel(kind, 3, 3, H, torch.float64, seed=2).to(device)
    out, norms = cs.clip_singular_values(w, (H, H), max_value=1.0, return_norms=True)
    assert bool(torch.isfinite(out).all())
    before = dense_svdvals(w, (H, H))
    after = dense_svdvals(out, (H, H))
    scale = max(1.0, float(before[0]))
    assert float((after - before.clamp(max=1.0)).abs().max()) < 1e-12 * scale
    assert abs(float(norms["before"]) - float(before[0])) < 1e-12 * scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_penalty_structured(device, kind):
    """The bounds' penalties are at least the sum of the dense norms; the
    exact one (Lanczos to 1e-6 for the zero-padded layer) equals it."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular", bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(structured_kernel(kind, 4, 3, 3, seed=3))
        model[2].weight.copy_(structured_kernel(kind, 4, 4, 3, seed=4))
    model.to(device)
    true = float(dense_svdvals(model[0].weight.detach(), (8, 8), "zeros")[0]
                 + dense_svdvals(model[2].weight.detach(), (8, 8))[0])
    for method in NONCHEAP:
        value = float(cs.nn.spectral_penalty(model, (8, 8), method).detach())
        if method == "exact":
            assert abs(value - true) <= 1e-6 * max(1.0, true), (method, value, true)
        else:
            assert value >= true * (1 - 1e-12), (method, value, true)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_cayley_layer_structured_weight_is_orthogonal(device, kind):
    layer = cs.nn.CayleyConv2d(3, 4, 3).double().to(device)
    with torch.no_grad():
        layer.weight.copy_(structured_kernel(kind, 4, 3, 3, seed=5))
    layer.bias = None
    sv = torch.linalg.svdvals(dense_layer_operator(layer, 3, 6, 6))
    assert float((sv - 1).abs().max()) < 1e-10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_taps_give_nan_everywhere(device, bad):
    """Every function of the kernel returns NaN for a NaN or Inf tap (the
    exact zero-padded norm raised an eigh error, the Schur test gave Inf)."""
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    w[1, 2, 0, 1] = bad
    results = {
        "singular_values": cs.singular_values(w, (8, 8)),
        "singular_values zeros": cs.singular_values(w, (8, 8), padding="zeros"),
        "singular_values stride": cs.singular_values(w, (8, 8), stride=2),
        "svd": cs.conv_svd(w, (8, 8))[1],
        "clip": cs.clip_singular_values(w, (8, 8)),
    }
    for padding in ("circular", "zeros"):
        for method in cs.norms.NORM_METHODS:
            results[f"spectral_norm {padding} {method}"] = cs.spectral_norm(w, (8, 8), padding, method)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double().to(device)
    with torch.no_grad():
        conv.weight.copy_(w)
    results["spectral_penalty"] = cs.nn.spectral_penalty(conv, (8, 8)).detach()
    for name, value in results.items():
        assert bool(value.isnan().all()), name


SCALED_FUNCTIONS = {
    "singular_values": lambda w: cs.singular_values(w, (6, 6)),
    "singular_values stride 2": lambda w: cs.singular_values(w, (6, 6), stride=2),
    "singular_values zeros": lambda w: cs.singular_values(w, (6, 6), padding="zeros"),
    "conv_svd S": lambda w: cs.conv_svd(w, (6, 6))[1],
    **{f"spectral_norm {padding} {method}": (lambda p, m: lambda w: cs.spectral_norm(w, (6, 6), p, m))(padding, method)
       for padding in ("circular", "zeros") for method in ("exact", "certified", "gram", "sum_taps", "reshape", "l1")},
}


@pytest.mark.parametrize("name", SCALED_FUNCTIONS)
def test_float32_kernels_from_1e_30_to_1e30_give_the_scaled_values(name):
    """Every spectrum and norm is homogeneous in the kernel: a float32 kernel
    scaled by 1e-30 ... 1e30 gives the float64 values of the unscaled one times
    the scale (the zero-padding approximation gave NaN from 1e20 and 0 at
    1e-30; the l1 bound inf / 0), for duplicated-filter and rank-one kernels."""
    f = SCALED_FUNCTIONS[name]
    for kind in ("duplicated_filters", "rank_one"):
        w = structured_kernel(kind, 4, 3, 3, torch.float64, seed=5)
        expected = f(w)
        for scale in (1e-30, 1e-20, 1e20, 1e30):
            got = f((w * scale).float()).double() / scale
            torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5 * float(expected.abs().max()),
                                       msg=f"{name}, {kind} x {scale:g}")


@pytest.mark.parametrize("name", [n for n in SCALED_FUNCTIONS if n.startswith("spectral_norm")])
def test_norms_of_a_zero_kernel_are_zero_with_a_finite_gradient(name):
    w = torch.zeros(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    value = SCALED_FUNCTIONS[name](w)
    (grad,) = torch.autograd.grad(value, w)
    assert float(value.detach()) == 0 and torch.isfinite(grad).all(), name
