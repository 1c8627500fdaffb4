"""LOT, AOL, CPL and SLL against their dense operators and adversarially
searched input pairs; gradcheck, training, export, lipschitz_bound, errors."""

import pytest
import torch
from helpers import dense_layer_operator
from structured import structured_kernel
from torch import nn

import convspectra as cs


def perturbed(layer, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def affine_operator(layer, c, H, W):
    """The matrix of an affine layer: its images of the basis minus its image of 0."""
    zero = torch.zeros(1, c, H, W, dtype=torch.float64)
    with torch.no_grad():
        offset = layer(zero).reshape(1, -1)
    return (dense_layer_operator(layer, c, H, W).T - offset).T


@pytest.mark.parametrize("c_in, c_out, stride, n", [(4, 4, 1, 6), (3, 8, 1, 5), (8, 3, 1, 7), (2, 8, 2, 8),
                                                    (4, 6, 2, 6), (16, 16, 1, 4)])
def test_lot_is_orthogonal(c_in, c_out, stride, n):
    layer = perturbed(cs.nn.LOTConv2d(c_in, c_out, 3, stride=stride).double())
    s = torch.linalg.svdvals(affine_operator(layer, c_in, n, n))
    rank = min(c_in * n * n, c_out * (n // stride) ** 2)
    assert torch.allclose(s[:rank], torch.ones(rank, dtype=torch.float64), atol=1e-8)
    assert float(cs.lipschitz_bound(layer, n).detach()) == pytest.approx(1.0, abs=1e-8)


def test_lot_identity_start_and_training_keeps_it_orthogonal():
    layer = cs.nn.LOTConv2d(4, 4, 3).double()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    assert torch.allclose(layer(x), x)  # the Dirac start is the identity
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        (layer(x) * torch.randn_like(x)).sum().backward()
        opt.step()
    s = torch.linalg.svdvals(affine_operator(layer, 4, 6, 6))
    assert not torch.allclose(layer(x), x)
    assert torch.allclose(s, torch.ones_like(s), atol=1e-8)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("kind", ["gaussian", "box", "constant_scaled", "duplicated_filters", "rank_one",
                                  "centre_only"])
@pytest.mark.parametrize("c_in, c_out, k, n", [(3, 5, 3, 6), (6, 2, 5, 7), (4, 4, 2, 5)])
def test_aol_norm_is_at_most_one(padding_mode, kind, c_in, c_out, k, n):
    layer = cs.nn.AOLConv2d(c_in, c_out, k, padding_mode=padding_mode).double()
    with torch.no_grad():
        layer.weight.copy_(structured_kernel(kind, c_out, c_in, k))
    norm = float(torch.linalg.matrix_norm(affine_operator(layer, c_in, n, n), 2))
    assert norm <= 1 + 1e-12
    bound = float(cs.lipschitz_bound(layer, n).detach())
    assert norm * (1 - 1e-9) <= bound <= 1.0


def test_aol_orthogonal_centre_start_is_orthogonal():
    layer = cs.nn.AOLConv2d(4, 4, 3).double()
    s = torch.linalg.svdvals(affine_operator(layer, 4, 5, 5))
    assert torch.allclose(s, torch.ones_like(s), atol=1e-6)  # the rescaling is 1 up to its eps


def max_stretch(f, shape, trials=64, steps=150, seed=0):
    """The largest ||f(x) - f(y)|| / ||x - y|| over random pairs and pairs
    pushed by gradient ascent on that ratio."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(trials, *shape, generator=g, dtype=torch.float64)
    y = x + torch.randn(trials, *shape, generator=g, dtype=torch.float64) * torch.logspace(-3, 0, trials,
                                                                                          dtype=torch.float64).view(-1, 1, 1, 1)
    x.requires_grad_(True)
    y.requires_grad_(True)
    opt = torch.optim.Adam([x, y], lr=0.05)
    best = 0.0

    def ratios():
        return (f(x) - f(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)

    for _ in range(steps):
        opt.zero_grad()
        r = ratios()
        best = max(best, float(r.max()))
        (-r.sum()).backward()
        opt.step()
    return max(best, float(ratios().max()))


@pytest.mark.parametrize("cls", ["CPLConv2d", "SLLConv2d"])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("channels, inner, k, n", [(3, 6, 3, 6), (5, 2, 3, 5), (4, 4, 5, 8)])
def test_convex_potential_layers_are_1_lipschitz(cls, padding_mode, channels, inner, k, n):
    layer = perturbed(getattr(cs.nn, cls)(channels, inner, k, padding_mode=padding_mode).double(), 0.5).eval()
    assert max_stretch(layer, (channels, n, n)) <= 1 + 1e-6
    x = torch.randn(32, channels, n, n, dtype=torch.float64)
    assert float(cs.lipschitz_lower_bound(layer, x, iters=50)) <= 1 + 1e-6
    report = cs.lipschitz_report(layer, n)
    assert report.bound == 1.0 and report.rows[0].type == cls


def test_cpl_normalises_by_a_bound_that_holds():
    for padding_mode in ("zeros", "circular"):
        layer = perturbed(cs.nn.CPLConv2d(3, 5, 3, padding_mode=padding_mode).double())
        conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode=padding_mode, bias=False).double()
        with torch.no_grad():
            conv.weight.copy_(layer.weight)
        truth = float(torch.linalg.matrix_norm(dense_layer_operator(conv, 3, 7, 7), 2))
        h = float(layer.weight_norm(7, 7))
        assert truth * (1 - 1e-9) <= h <= 1.1 * truth
        if padding_mode == "circular":
            assert h == pytest.approx(truth, rel=1e-9)


def test_sll_q_matters_and_the_bound_holds_for_any_q():
    layer = perturbed(cs.nn.SLLConv2d(3, 4, 3).double())
    t0 = layer.inverse_t().detach().clone()
    with torch.no_grad():
        layer.log_q.copy_(torch.tensor([2.0, -1.0, 0.5, -3.0], dtype=torch.float64))
    assert not torch.allclose(layer.inverse_t(), t0)
    assert max_stretch(layer.eval(), (3, 6, 6), steps=100) <= 1 + 1e-6


@pytest.mark.parametrize("c_in, c_out, stride, n", [(4, 4, 1, 6), (3, 6, 1, 5), (6, 3, 1, 6), (2, 8, 2, 8)])
def test_soc_is_orthogonal_within_its_series_bound(c_in, c_out, stride, n, monkeypatch):
    from convspectra import lipschitz as lip
    from convspectra.nn.soc import series_remainder

    layer = perturbed(cs.nn.SOCConv2d(c_in, c_out, 3, stride=stride).double(), 0.1)
    L = layer.skew_weight().detach()
    ell = cs.spectral_norm(L, (n // stride, n // stride), "zeros", "certified")
    rank = min(c_in * n * n, c_out * (n // stride) ** 2)
    for mode, terms, measured in [("eval", layer.eval_terms, 1e-8), ("train", layer.terms, 1e-2)]:
        layer.train(mode == "train")
        s = torch.linalg.svdvals(affine_operator(layer, c_in, n, n))[:rank]
        slack = float(series_remainder(ell, terms))
        assert float((s - 1).abs().max()) <= slack + 1e-12
        assert float((s - 1).abs().max()) <= measured  # the documented deviation at this scale
    layer.eval()
    norm = float(torch.linalg.matrix_norm(affine_operator(layer, c_in, n, n), 2))
    assert float(cs.lipschitz_bound(layer, n).detach()) == pytest.approx(norm, rel=1e-12)
    monkeypatch.setattr(lip, "DENSE_MAX_ENTRIES", 0)  # the series bound alone
    report = cs.lipschitz_report(layer, n)
    assert norm <= report.bound <= 1 + 1e-6 and "remainder" in report.rows[0].method


def test_soc_series_remainder_is_an_upper_bound():
    from convspectra.nn.soc import series_remainder
    import math

    for x in (0.0, 0.3, 0.7, 2.0, 5.0):
        for terms in (1, 5, 12):
            exact = math.fsum(x**i / math.factorial(i) for i in range(terms + 1, terms + 150))  # the tail itself
            got = float(series_remainder(torch.tensor(x, dtype=torch.float64), terms))
            assert exact * (1 - 1e-12) - 1e-300 <= got <= exact * (1 + 1e-9) + 1e-300


@pytest.mark.parametrize("make", [
    lambda: cs.nn.SOCConv2d(2, 3, 3), lambda: cs.nn.SOCConv2d(2, 4, 1, stride=2),
    lambda: cs.nn.LOTConv2d(2, 3, 3, stride=2), lambda: cs.nn.AOLConv2d(2, 3, 3),
    lambda: cs.nn.AOLConv2d(2, 2, 3, padding_mode="circular"), lambda: cs.nn.CPLConv2d(2, 3, 3),
    lambda: cs.nn.SLLConv2d(2, 3, 3, padding_mode="circular"),
])
def test_gradcheck_and_export(make):
    layer = perturbed(make().double())
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    params = {name: p.detach().clone().requires_grad_(True) for name, p in layer.named_parameters()}
    names = list(params)

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    layer.eval()  # deterministic (SOC's power iteration moves only in training); no cache with autograd on
    assert torch.autograd.gradcheck(f, (x, *params.values()))
    plain = cs.nn.export(layer, 4)
    assert not any(type(m).__module__.startswith("convspectra") for m in plain.modules())
    with torch.no_grad():
        assert torch.allclose(plain(x), layer(x), atol=1e-10)


def test_eval_caches_follow_the_parameters():
    for layer in [cs.nn.AOLConv2d(2, 2, 3), cs.nn.CPLConv2d(2, 3, 3), cs.nn.SLLConv2d(2, 3, 3),
                  cs.nn.LOTConv2d(2, 2, 3)]:
        layer = perturbed(layer).eval()
        x = torch.randn(2, 2, 6, 6)
        with torch.no_grad():
            before = layer(x)
            layer.weight.add_(0.3 * torch.randn_like(layer.weight))  # not a scaling: AOL and LOT ignore scale
            after = layer(x)
        layer.train()
        assert torch.allclose(layer(x), after, atol=1e-6) and not torch.allclose(before, after)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="padding_mode"):
        cs.nn.AOLConv2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode"):
        cs.nn.CPLConv2d(2, 2, 3, padding_mode="replicate")
    with pytest.raises(ValueError, match="inner_channels"):
        cs.nn.SLLConv2d(2, 0, 3)
    with pytest.raises(ValueError, match=r"x must be \(batch, 2, H, W\)"):
        cs.nn.CPLConv2d(2, 3, 3)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="iters"):
        cs.nn.LOTConv2d(2, 2, 3, iters=0)
    with pytest.raises(ValueError, match="odd"):
        cs.nn.SOCConv2d(2, 2, 4)
    with pytest.raises(ValueError, match="eval_terms"):
        cs.nn.SOCConv2d(2, 2, 3, eval_terms=0)
    with pytest.raises(ValueError, match="divisible by the stride"):
        cs.nn.LOTConv2d(2, 2, 3, stride=2)(torch.randn(1, 2, 5, 4))


def test_layers_match_the_published_recipes_in_reference():
    ref = cs.reference
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    lot = perturbed(cs.nn.LOTConv2d(4, 4, 3).double(), 0.1)
    # coupled Newton-Schulz with the published 1e-4 regulariser: close to the exact polar factor, not equal
    assert torch.allclose(lot(x), ref.lot_conv2d(x, lot.weight, lot.bias, iters=25), atol=1e-3)
    soc = perturbed(cs.nn.SOCConv2d(4, 6, 3).double().eval(), 0.1)
    vectors = [[getattr(soc, f"_u{i}").clone(), getattr(soc, f"_v{i}").clone()] for i in range(4)]
    assert torch.allclose(soc(x), ref.soc_conv2d(x, soc.M, 6, soc.bias, terms=12, vectors=vectors, steps=50), atol=1e-12)
    # one training step each: the same power-iteration update on both sides
    soc.train()
    assert torch.allclose(soc(x), ref.soc_conv2d(x, soc.M, 6, soc.bias, terms=5, vectors=vectors, steps=1),
                          atol=1e-12)
    for mode in ("zeros", "circular"):
        aol = perturbed(cs.nn.AOLConv2d(4, 5, 3, padding_mode=mode).double())
        assert torch.allclose(aol(x), ref.aol_conv2d(x, aol.weight, aol.bias, mode), atol=1e-12)
        sll = perturbed(cs.nn.SLLConv2d(4, 3, 3, padding_mode=mode).double())
        assert torch.allclose(sll(x), ref.sll_conv2d(x, sll.weight, sll.bias, sll.log_q, mode), atol=1e-12)
    # CPL with a converged power iteration and circular padding: the same normalisation (the exact norm)
    cpl = perturbed(cs.nn.CPLConv2d(4, 3, 3, padding_mode="circular").double())
    u = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    y, _ = ref.cpl_conv2d(x, cpl.weight, cpl.bias, u, "circular", iters=2000)
    assert torch.allclose(cpl(x), y, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: cs.nn.AOLConv2d(3, 3, 3), lambda: cs.nn.SOCConv2d(3, 3, 3), lambda: cs.nn.CPLConv2d(3, 4, 3),
    lambda: cs.nn.SLLConv2d(3, 4, 3, padding_mode="circular"),
])
def test_training_keeps_the_layer_1_lipschitz(make):
    layer = make().double()
    x = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(10):  # push the outputs apart: the direction that would break a bound
        opt.zero_grad()
        (-(layer(x) - layer(x.roll(1, 0))).square().sum()).backward()
        opt.step()
    layer.eval()
    if isinstance(layer, (cs.nn.AOLConv2d, cs.nn.SOCConv2d)):  # affine: the dense operator
        norm = float(torch.linalg.matrix_norm(affine_operator(layer, 3, 6, 6), 2))
        assert norm <= 1 + 1e-8
    else:
        assert max_stretch(layer, (3, 6, 6), steps=60) <= 1 + 1e-6


def test_lot_identity_start_for_even_and_strided_kernels():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    assert torch.allclose(cs.nn.LOTConv2d(4, 4, 2).double()(x), x)
    # stride 2, kernel 3: after the pixel unshuffle a 2x2 kernel, still started at the identity
    y = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(cs.nn.LOTConv2d(1, 4, 3, stride=2).double()(y), nn.functional.pixel_unshuffle(y, 2))


@pytest.mark.parametrize("cls", [cs.nn.LOTConv2d, cs.nn.CayleyConv2d])
def test_fourier_layers_fold_a_kernel_larger_than_the_input(cls):
    # every tap acts (folded onto the grid), none is cropped away: moving the last tap changes the output
    layer = perturbed(cls(2, 2, 5).double())
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    before = layer(x)
    with torch.no_grad():
        layer.weight[:, :, -1, -1] += 1.0
    assert not torch.allclose(layer(x), before)
    s = torch.linalg.svdvals(affine_operator(layer, 2, 3, 3))
    assert torch.allclose(s, torch.ones_like(s), atol=1e-8)


def test_float32_bounds_round_up():
    from convspectra import lipschitz as lip

    # SOC's certified series tail is below float32's resolution at 1: the bound must still exceed 1
    layer = cs.nn.SOCConv2d(3, 3, 3).eval()
    lip_dense = lip.DENSE_MAX_ENTRIES
    try:
        lip.DENSE_MAX_ENTRIES = 0
        bound = cs.lipschitz_bound(layer, 6)
    finally:
        lip.DENSE_MAX_ENTRIES = lip_dense
    assert bound.dtype == torch.float32 and float(bound) > 1.0
    # the dense path's size guard counts the identity it builds, not only the matrix
    assert lip._dense_norm(lambda x: x.flatten(1)[:, :10], (4096, 4, 4), (10,), torch.float32) is None


def test_export_of_a_training_model_takes_the_eval_function():
    model = nn.Sequential(cs.nn.SOCConv2d(2, 2, 3), cs.nn.MaxMin()).double()  # in training mode
    plain = cs.nn.export(model, 5)
    assert plain.training and model.training
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), model.eval()(x), atol=1e-12)


LAYER_MAKERS = {
    "lot": lambda: cs.nn.LOTConv2d(3, 3, 3), "soc": lambda: cs.nn.SOCConv2d(3, 3, 3),
    "aol": lambda: cs.nn.AOLConv2d(3, 3, 3), "aol_circular": lambda: cs.nn.AOLConv2d(3, 3, 3, padding_mode="circular"),
    "cpl": lambda: cs.nn.CPLConv2d(3, 3, 3), "sll": lambda: cs.nn.SLLConv2d(3, 3, 3),
}


@pytest.mark.parametrize("name", list(LAYER_MAKERS))
@pytest.mark.parametrize("kind", ["zero", "constant_scaled", "duplicated_filters", "rank_one", "identity", "box"])
@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30])
def test_layers_on_structured_and_scaled_weights(name, kind, scale):
    # weights set by hand (no re-initialisation of any internal state): the layer stays finite and
    # 1-Lipschitz (SOC: within its eval series tail), and lipschitz_bound holds
    layer = LAYER_MAKERS[name]().double().eval()
    param = layer.M if name == "soc" else layer.weight
    with torch.no_grad():
        param.copy_(structured_kernel(kind, *param.shape[:2], param.shape[-1]) * scale)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    y = layer(x)
    assert torch.isfinite(y).all()
    bound = float(cs.lipschitz_bound(layer, 6).detach())
    if name in ("cpl", "sll"):
        assert bound == 1.0 and max_stretch(layer, (3, 6, 6), trials=16, steps=30) <= 1 + 1e-6
    else:
        norm = float(torch.linalg.matrix_norm(affine_operator(layer, 3, 6, 6), 2))
        assert norm <= bound * (1 + 1e-9) + 1e-12
        assert norm <= 1 + 1e-6


@pytest.mark.parametrize("name", list(LAYER_MAKERS))
def test_layers_take_an_empty_batch(name):
    layer = LAYER_MAKERS[name]().double()
    assert layer(torch.zeros(0, 3, 6, 6, dtype=torch.float64)).shape == (0, 3, 6, 6)
    assert cs.nn.OrthogonalLinear(4, 3)(torch.zeros(0, 4)).shape == (0, 3)
    assert cs.nn.GroupSort(3)(torch.zeros(0, 3, 2, 2)).shape == (0, 3, 2, 2)
    assert cs.nn.MaxMin()(torch.zeros(0, 4)).shape == (0, 4)
