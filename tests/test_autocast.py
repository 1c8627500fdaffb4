"""Mixed precision: every public function and layer under torch.autocast.

Functions compute in float32 and return float32 (torch.linalg's autocast
policy); layers compute their map in float32 and return the autocast dtype,
rounded once (as nn.Conv2d returns it). So under autocast a function gives the
float32 result itself, and a layer the correct rounding of its float32 output:
an orthogonal kernel built from bfloat16 products would miss that by many
units in the last place. Inputs are structured (duplicated, rank-deficient)
kernels, not only Gaussians."""

import pytest
import torch

import convspectra as cs
from structured import structured_kernel

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# (device, autocast dtype): CPU bfloat16 (and float16, which CPU autocast also
# runs), CUDA float16 and bfloat16.
SETTINGS = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16"), pytest.param("cpu", torch.float16, id="cpu-fp16"),
            pytest.param("cuda", torch.float16, id="cuda-fp16", marks=CUDA),
            pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=CUDA)]
# the unit roundoff of each dtype: round-to-nearest is within it, relatively
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def weights(device):
    return {
        "duplicated": structured_kernel("duplicated_filters", 6, 4, 3, torch.float32).to(device),
        "rank_one": structured_kernel("rank_one", 4, 6, 3, torch.float32, seed=1).to(device),
        "gaussian": structured_kernel("gaussian", 5, 5, 3, torch.float32, seed=2).to(device),
        "zero": structured_kernel("zero", 4, 3, 3, torch.float32).to(device),
        "constant_scaled": structured_kernel("constant_scaled", 3, 4, 3, torch.float32).to(device),
        "1e-30": (structured_kernel("gaussian", 4, 4, 3, seed=3) * 1e-30).float().to(device),
        "1e30": (structured_kernel("gaussian", 4, 4, 3, seed=4) * 1e30).float().to(device),
    }


FUNCTIONS = {
    "symbol": lambda w: cs.symbol(w, (6, 5)),
    "singular_values": lambda w: cs.singular_values(w, (6, 5)),
    "singular_values zeros": lambda w: cs.singular_values(w, (6, 5), padding="zeros"),
    "singular_values stride 2": lambda w: cs.singular_values(w, (6, 6), stride=2),
    "conv_svd S": lambda w: cs.conv_svd(w, (6, 5))[1],
    "spectral_norm": lambda w: cs.spectral_norm(w, (6, 5)),
    "spectral_norm zeros": lambda w: cs.spectral_norm(w, (6, 5), padding="zeros"),
    "spectral_norm certified": lambda w: cs.spectral_norm(w, (6, 5), padding="zeros", method="certified"),
    "spectral_norm gram": lambda w: cs.spectral_norm(w, (6, 5), method="gram"),
    "clip_singular_values": lambda w: cs.clip_singular_values(w, (6, 5), 1.0),
    "linalg.svdvals": lambda w: cs.linalg.svdvals(w.flatten(2)),
    "linalg.svd S": lambda w: cs.linalg.svd(w.flatten(2))[1],
    "linalg.gram_bound": lambda w: cs.linalg.gram_bound(w.flatten(2)),
    "linalg.cayley": lambda w: cs.linalg.cayley(w.flatten(2)[:, :3, :3]),
    "linalg.bjorck": lambda w: cs.linalg.bjorck(w.flatten(2) / w.flatten(2).norm().clamp_min(1e-30)),
}


@pytest.mark.parametrize("device,dtype", SETTINGS)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_return_their_float32_result_under_autocast(device, dtype, name):
    for kind, w in weights(device).items():
        expected = FUNCTIONS[name](w)
        with torch.autocast(device, dtype=dtype):
            got = FUNCTIONS[name](w)
        assert got.dtype == expected.dtype and expected.dtype in (torch.float32, torch.complex64), (kind, got.dtype)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * float(w.abs().max().clamp_max(1)),
                                   msg=f"{name} on {kind}")


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_gradients_of_the_spectra_under_autocast_are_the_float32_ones(device, dtype):
    w = weights(device)["duplicated"].requires_grad_()
    (expected,) = torch.autograd.grad(cs.spectral_norm(w, (6, 5)) + cs.singular_values(w, (6, 5)).sum(), w)
    with torch.autocast(device, dtype=dtype):
        loss = cs.spectral_norm(w, (6, 5)) + cs.singular_values(w, (6, 5)).sum()
    (got,) = torch.autograd.grad(loss, w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_low_precision_matrices_are_upcast_under_autocast_and_refused_outside(device, dtype):
    A = structured_kernel("duplicated_filters", 5, 3, 2, torch.float32).flatten(2).to(device, dtype)
    with torch.autocast(device, dtype=dtype):
        got = cs.linalg.svdvals(A)
        raw = torch.ops.convspectra.svdvals(A) if cs.backend_info()["compiled"] else got
    expected = cs.linalg.svdvals(A.float())
    assert got.dtype == raw.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(raw, expected)
    with pytest.raises(TypeError, match="autocast"):
        cs.linalg.svdvals(A)


def layers(device):
    torch.manual_seed(0)
    made = {
        "CayleyConv2d": cs.nn.CayleyConv2d(4, 4, 3),
        "CayleyConv2d stride 2": cs.nn.CayleyConv2d(4, 16, 3, stride=2),
        "BCOPConv2d": cs.nn.BCOPConv2d(4, 4, 3),
        "LOTConv2d": cs.nn.LOTConv2d(4, 4, 3),
        "SOCConv2d": cs.nn.SOCConv2d(4, 4, 3),
        "AOLConv2d": cs.nn.AOLConv2d(4, 6, 3),
        "CPLConv2d": cs.nn.CPLConv2d(4, 6, 3),
        "SLLConv2d": cs.nn.SLLConv2d(4, 6, 3),
        "OrthogonalLinear": cs.nn.OrthogonalLinear(4 * 8 * 8, 32),
    }
    return {k: m.to(device) for k, m in made.items()}


# the layers that preserve norms at these shapes (SOC's series does so only to its truncation)
ISOMETRIES = ("CayleyConv2d", "CayleyConv2d stride 2", "BCOPConv2d", "LOTConv2d")


def layer_input(name, device):
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x[1] = x[0]  # a duplicated sample
    x = x.to(device)
    return x.flatten(1) if name == "OrthogonalLinear" else x


@pytest.mark.parametrize("device,dtype", SETTINGS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layers_return_the_rounding_of_their_float32_output(device, dtype, training):
    for name, layer in layers(device).items():
        layer.train(training)
        x = layer_input(name, device)
        with torch.no_grad():
            expected = layer(x)
            for x_in in (x, x.to(dtype)):  # a float32 input, and one that autocast already rounded
                with torch.autocast(device, dtype=dtype):
                    got = layer(x_in)
                assert got.dtype == dtype, name
                reference = expected if x_in.dtype == torch.float32 else layer(x_in.float())
                # round-to-nearest of the float32 result: within one unit roundoff, elementwise
                bound = UNIT_ROUNDOFF[dtype] * reference.abs() + 1e-6 * reference.abs().max()
                assert ((got.float() - reference).abs() <= bound).all(), name
        if name in ISOMETRIES:
            ratio = torch.linalg.vector_norm(got.float().flatten(1), dim=1) / torch.linalg.vector_norm(
                x.flatten(1), dim=1)
            assert (ratio - 1).abs().max() < 4 * UNIT_ROUNDOFF[dtype], name  # an isometry, to the rounding


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_layers_take_an_empty_batch_under_autocast(device, dtype):
    for name, layer in layers(device).items():
        x = layer_input(name, device)[:0]
        with torch.autocast(device, dtype=dtype):
            y = layer(x)
        assert y.dtype == dtype and y.shape[0] == 0 and y.shape[1:] == layer(layer_input(name, device)).shape[1:], name


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_a_training_step_under_autocast_gives_float32_gradients_close_to_the_float32_step(device, dtype):
    for name, layer in layers(device).items():
        x = layer_input(name, device)
        target = torch.randn_like(layer(x)).detach()
        params = [p for p in layer.parameters() if p.requires_grad]
        expected = torch.autograd.grad(((layer(x) - target) ** 2).sum(), params)
        with torch.autocast(device, dtype=dtype):
            y = layer(x)
        got = torch.autograd.grad(((y.float() - target) ** 2).sum(), params)
        for g, e in zip(got, expected):
            assert g.dtype == torch.float32, name
            assert torch.linalg.vector_norm(g - e) <= 8 * UNIT_ROUNDOFF[dtype] * torch.linalg.vector_norm(e) + 1e-6, name


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_certificates_under_autocast_are_those_of_the_float32_network(device, dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(cs.nn.CayleyConv2d(3, 4, 3), cs.nn.MaxMin(), cs.nn.BCOPConv2d(4, 4, 3),
                                torch.nn.Flatten(), cs.nn.OrthogonalLinear(4 * 8 * 8, 10)).to(device)
    x = torch.randn(6, 3, 8, 8, device=device)
    y = torch.arange(6, device=device) % 10
    L = cs.lipschitz_bound(model, (8, 8), in_channels=3)
    acc = cs.certified_accuracy(model, x, y, eps=0.01, lipschitz=L)
    penalty = cs.nn.spectral_penalty(model, (8, 8))
    with torch.autocast(device, dtype=dtype):
        assert cs.lipschitz_bound(model, (8, 8), in_channels=3) == L
        assert cs.certified_accuracy(model, x, y, eps=0.01, lipschitz=L) == acc
        got_penalty = cs.nn.spectral_penalty(model, (8, 8))
        logits = model(x)
    assert got_penalty.dtype == torch.float32
    torch.testing.assert_close(got_penalty, penalty)
    assert logits.dtype == dtype
    with pytest.raises(TypeError, match="autocast"):  # a radius from rounded logits would not be certified
        cs.certified_radius(logits, L)


@pytest.mark.parametrize("device,dtype", SETTINGS)
def test_losses_and_activations_under_autocast(device, dtype):
    logits = torch.randn(5, 4, device=device)
    logits[1] = logits[0]
    target = torch.tensor([0, 1, 2, 3, 0], device=device)
    for loss in (cs.nn.OffsetCrossEntropy(0.5), cs.nn.MarginHingeLoss(0.3)):
        expected = loss(logits.to(dtype).float(), target)
        with torch.autocast(device, dtype=dtype):
            got = loss(logits.to(dtype), target)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected)
    x = torch.randn(2, 6, 3, 3, device=device).to(dtype)
    for act in (cs.nn.MaxMin(), cs.nn.GroupSort(3)):  # a sort is exact in any dtype, autocast or not
        assert act(x).dtype == dtype
        torch.testing.assert_close(act(x).float(), act(x.float()), rtol=0, atol=0)


def test_low_precision_outside_autocast_is_refused_with_the_way_out():
    layer = cs.nn.CayleyConv2d(4, 4, 3)
    with pytest.raises(TypeError, match="x must have dtype float32/float64, got torch.bfloat16.*autocast"):
        layer(torch.randn(1, 4, 8, 8).bfloat16())
    with pytest.raises(TypeError, match="weight must have dtype.*autocast"):
        cs.singular_values(torch.randn(2, 2, 3, 3).half(), (4, 4))


@pytest.mark.parametrize("device,dtype", SETTINGS[:1] + SETTINGS[2:])
def test_compiled_functions_and_layers_under_autocast_keep_float32_inside(device, dtype):
    """torch.compile(fullgraph=True) under autocast: the same float32 result
    and the same rounding of a layer's float32 output as in eager mode."""
    w = weights(device)["duplicated"]
    norm = torch.compile(lambda w: cs.spectral_norm(w, (6, 5)), fullgraph=True)
    expected = cs.spectral_norm(w, (6, 5))
    with torch.autocast(device, dtype=dtype):
        got = norm(w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    for layer in (cs.nn.BCOPConv2d(4, 4, 3).to(device), cs.nn.AOLConv2d(4, 6, 3).to(device)):
        x = layer_input("", device)
        with torch.no_grad():
            reference = layer(x)
            with torch.autocast(device, dtype=dtype):
                y = torch.compile(layer, fullgraph=True)(x)
        assert y.dtype == dtype
        bound = UNIT_ROUNDOFF[dtype] * reference.abs() + 1e-6 * reference.abs().max()
        assert ((y.float() - reference).abs() <= bound).all(), type(layer).__name__


def helpers_of_the_layers():
    """The public functions and methods that build a layer's kernel or bound
    outside its forward: under autocast they must be their float32 selves."""
    torch.manual_seed(0)
    aol, cpl, sll = cs.nn.AOLConv2d(4, 6, 3), cs.nn.CPLConv2d(4, 6, 3), cs.nn.SLLConv2d(4, 6, 3)
    soc, bcop, linear = cs.nn.SOCConv2d(4, 4, 3).eval(), cs.nn.BCOPConv2d(4, 4, 3), cs.nn.OrthogonalLinear(12, 8)
    w = structured_kernel("duplicated_filters", 6, 4, 3, torch.float32)
    return {
        "nn.aol_rescale": lambda: cs.nn.aol_rescale(w),
        "AOLConv2d.rescaled_weight": aol.rescaled_weight,
        "CPLConv2d.weight_norm": lambda: cpl.weight_norm(8, 8),
        "CPLConv2d.step_size": lambda: cpl.step_size(8, 8),
        "SLLConv2d.inverse_t": sll.inverse_t,
        "SOCConv2d.skew_weight": soc.skew_weight,
        "BCOPConv2d.weight": lambda: bcop.weight,
        "OrthogonalLinear.orthogonal_weight": linear.orthogonal_weight,
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_layers_kernel_helpers_and_export_are_float32_under_autocast(dtype):
    for name, helper in helpers_of_the_layers().items():
        expected = helper()
        with torch.autocast("cpu", dtype=dtype):
            got = helper()
        assert got.dtype == expected.dtype == torch.float32, name
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
    torch.manual_seed(0)
    model = torch.nn.Sequential(cs.nn.SOCConv2d(3, 4, 3), cs.nn.MaxMin(), cs.nn.AOLConv2d(4, 4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = cs.nn.export(model, (8, 8))(x)
    with torch.autocast("cpu", dtype=dtype):
        exported = cs.nn.export(model, (8, 8))
    torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-6)  # its kernels were built in float32


def test_layers_still_run_on_the_meta_device():
    """Shape inference on meta tensors (deferred initialisation): autocast knows no meta device."""
    for layer in (cs.nn.CayleyConv2d(4, 8, 3), cs.nn.AOLConv2d(4, 6, 3), cs.nn.MaxMin()):
        y = layer.to("meta")(torch.empty(2, 4, 8, 8, device="meta"))
        assert y.device.type == "meta" and y.shape[0] == 2
