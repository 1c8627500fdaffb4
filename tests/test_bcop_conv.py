"""cs.nn.BCOPConv2d and cs.nn.bcop_kernel: the k x k support, the exact circular
spectrum, the reference, folding, gradients, training, caching (the tests both
orthogonal layers share are in test_orthogonal_layers.py)."""

import pytest
import torch

import convspectra as cs
from helpers import DEVICES, rel_err

# (in, out, k, stride, H, W): square, tall, wide, odd channel counts, even k,
# k = 1, strided (iso- and co-isometric)
CASES = [(4, 4, 3, 1, 6, 7), (3, 5, 2, 1, 5, 6), (5, 3, 3, 1, 6, 5), (3, 3, 1, 1, 5, 4), (2, 8, 3, 2, 8, 6),
         (4, 8, 3, 2, 8, 6)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_the_reference_layer(device, case):
    c_in, c_out, k, s, H, W = case
    layer = cs.nn.BCOPConv2d(c_in, c_out, k, stride=s).double().to(device)
    with torch.no_grad():
        layer.bias.normal_()
        layer.matrices.add_(0.1 * torch.randn_like(layer.matrices))  # away from the orthogonal start
    x = torch.randn(3, c_in, H, W, dtype=torch.float64, device=device)
    ref = cs.reference.bcop_conv2d(x, layer.matrices, c_out, layer.bias, s)
    assert rel_err(layer(x), ref) < 1e-12
    kernel = cs.nn.bcop_kernel(layer.matrices, c_out, c_in * s * s, iters=5)
    assert rel_err(kernel, cs.reference.bcop_kernel(layer.matrices, c_out, c_in * s * s, iters=5)) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_kernel_is_orthogonal_on_the_exact_spectrum_and_confined_to_k_by_k(device, k):
    layer = cs.nn.BCOPConv2d(6, 6, k).double().to(device)
    weight = layer.weight
    assert weight.shape == (6, 6, k, k)
    sv = cs.singular_values(weight.detach(), 8)
    assert (sv - 1).abs().max() < 1e-8
    # the impulse response of one channel at one pixel covers exactly the k x k window
    x = torch.zeros(1, 6, 8, 8, dtype=torch.float64, device=device)
    x[0, 2, 4, 4] = 1
    with torch.no_grad():
        y = layer(x) - layer.bias[:, None, None]
    support = y.abs().sum(1)[0] > 1e-12
    rows, cols = support.nonzero().unbind(1)
    assert rows.max() - rows.min() < k and cols.max() - cols.min() < k
    assert rel_err(y.norm(), torch.ones((), dtype=torch.float64)) < 1e-10


@pytest.mark.parametrize("k", [2, 3, 5])
def test_circular_conv2d_folds_kernels_larger_than_the_input(k):
    # against the dense circulant operator of reference.dense_operator on a grid >= k
    weight = torch.randn(2, 3, k, k, dtype=torch.float64)
    x = torch.randn(1, 3, 2, 3, dtype=torch.float64)
    y = cs.nn.circular_conv2d(x, weight)
    # periodic tiling: a 2 x 3 input repeated to cover the kernel gives the same output, repeated
    reps = (-(-k // 2) * 2, -(-k // 3) * 3)
    big = x.repeat(1, 1, reps[0] // 2, reps[1] // 3)
    assert rel_err(cs.reference.conv(big, weight)[..., :2, :3], y) < 1e-13


def test_gradcheck_of_the_layer():
    torch.manual_seed(0)
    layer = cs.nn.BCOPConv2d(2, 3, 2, bjorck_iters=4).double()
    x = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)

    def f(x, matrices, bias):
        return torch.func.functional_call(layer, {"matrices": matrices, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, layer.matrices, layer.bias))


def test_eval_cache_follows_the_parameters():
    layer = cs.nn.BCOPConv2d(2, 2, 3).double().eval()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        y1 = layer(x)
        assert len(layer._cache) == 1
        assert torch.equal(layer(x), y1)
        layer(torch.randn(1, 2, 8, 6, dtype=torch.float64))
        assert len(layer._cache) == 1  # the kernel does not depend on the input size
        layer.matrices.add_(0.1)  # a parameter change invalidates it
        y2 = layer(x)
    assert not torch.allclose(y1, y2)
    assert rel_err(y2, cs.reference.bcop_conv2d(x, layer.matrices, 2, layer.bias)) < 1e-12
    layer.train()
    assert len(layer._cache) == 0


def test_parameters_and_repr():
    layer = cs.nn.BCOPConv2d(3, 8, 5, stride=2, bias=False)
    assert repr(layer) == "BCOPConv2d(3, 8, kernel_size=(5, 5), stride=(2, 2), bias=False)"
    # pixel unshuffle: 12 channels, ceil(5/2) = 3 taps: 2(3-1)+1 free 12 x 12 matrices
    assert layer.matrices.shape == (5, 12, 12)
    assert layer.weight.shape == (8, 12, 3, 3)
    assert [n for n, _ in cs.nn.BCOPConv2d(3, 4, 3).named_parameters()] == ["bias", "matrices"]
