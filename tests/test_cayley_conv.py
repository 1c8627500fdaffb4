"""cs.nn.CayleyConv2d: the reference layer, gradients, training, caching, repr
(the tests both orthogonal layers share are in test_orthogonal_layers.py)."""

import pytest
import torch

import convspectra as cs
from helpers import DEVICES, rel_err

# (in, out, k, stride, H, W): square, tall, wide, strided (iso- and co-isometric), odd sizes, even k
CASES = [(4, 4, 3, 1, 6, 7), (3, 5, 3, 1, 5, 6), (5, 3, 2, 1, 6, 5), (2, 8, 3, 2, 8, 6), (4, 8, 3, 2, 8, 6),
         (2, 3, 4, 2, 6, 6), (3, 3, 1, 1, 7, 5)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_the_reference_layer(device, case):
    c_in, c_out, k, s, H, W = case
    layer = cs.nn.CayleyConv2d(c_in, c_out, k, stride=s).double().to(device)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, c_in, H, W, dtype=torch.float64, device=device)
    ref = cs.reference.cayley_conv2d(x, layer.weight, layer.alpha, layer.bias, s)
    assert rel_err(layer(x), ref) < 1e-12


def test_gradcheck_of_the_layer():
    torch.manual_seed(0)
    layer = cs.nn.CayleyConv2d(2, 3, 3).double()
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    params = (layer.weight, layer.alpha, layer.bias)

    def f(x, weight, alpha, bias):
        return torch.func.functional_call(layer, {"weight": weight, "alpha": alpha, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


def test_alpha_is_registered_before_any_forward():
    # an optimiser built right after construction must see it (it trains: test_orthogonal_layers)
    layer = cs.nn.CayleyConv2d(3, 3, 3, bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "alpha"]


def test_eval_cache_follows_the_parameters():
    layer = cs.nn.CayleyConv2d(2, 2, 3).double().eval()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        y1 = layer(x)
        assert len(layer._cache) == 1
        assert torch.equal(layer(x), y1)
        layer(torch.randn(1, 2, 8, 6, dtype=torch.float64))
        assert len(layer._cache) == 2  # one per input size
        layer.weight.add_(0.1)  # a parameter change invalidates it
        y2 = layer(x)
    assert not torch.allclose(y1, y2)
    assert rel_err(y2, cs.reference.cayley_conv2d(x, layer.weight, layer.alpha, layer.bias)) < 1e-12
    layer.train()
    assert len(layer._cache) == 0


def test_extra_repr():
    assert repr(cs.nn.CayleyConv2d(3, 8, 5, stride=2, bias=False)) == \
        "CayleyConv2d(3, 8, kernel_size=(5, 5), stride=(2, 2), bias=False)"
    layer = cs.nn.CayleyConv2d(3, 8, 5, stride=2)
    assert layer.weight.shape == (8, 12, 3, 3)  # pixel unshuffle: 3*4 channels, ceil(5/2) taps
