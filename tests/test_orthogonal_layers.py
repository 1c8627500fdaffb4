"""What CayleyConv2d and BCOPConv2d share: all singular values of the dense
operator equal to 1, float32 norm preservation, channels_last inputs,
circular-shift equivariance, clear errors."""

import pytest
import torch

import convspectra as cs
from helpers import DEVICES, rel_err
from helpers import dense_layer_operator as dense

LAYERS = [cs.nn.CayleyConv2d, cs.nn.BCOPConv2d]
# (in, out, k, stride, H, W): square, tall, wide, odd channel counts, even k, k = 1,
# strided (iso- and co-isometric), odd sizes, a kernel wider than the input
CASES = [(4, 4, 3, 1, 6, 7), (3, 5, 2, 1, 5, 6), (5, 3, 3, 1, 6, 5), (3, 3, 1, 1, 7, 5), (2, 8, 3, 2, 8, 6),
         (4, 8, 3, 2, 8, 6), (2, 3, 4, 2, 6, 6), (3, 3, 5, 1, 3, 4)]
# Cayley is exact up to rounding; BCOP up to Bjorck's convergence
ORTHOGONALITY_TOL = {cs.nn.CayleyConv2d: 1e-10, cs.nn.BCOPConv2d: 1e-8}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_dense_operator_is_orthogonal(device, layer_class, case):
    c_in, c_out, k, s, H, W = case
    layer = layer_class(c_in, c_out, k, stride=s, bias=False).double().to(device)
    T = dense(layer, c_in, H, W)
    assert T.shape == (c_out * (H // s) * (W // s), c_in * H * W)
    sv = torch.linalg.svdvals(T.cpu())
    # isometry or co-isometry: every singular value is 1
    assert (sv - 1).abs().max() < ORTHOGONALITY_TOL[layer_class]


@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_training_moves_every_parameter_and_keeps_it_orthogonal(layer_class):
    torch.manual_seed(0)
    layer = layer_class(3, 3, 3, bias=False).double()
    before = {name: p.detach().clone() for name, p in layer.named_parameters()}
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    target = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    for _ in range(5):
        opt.zero_grad()
        ((layer(torch.randn(4, 3, 6, 6, dtype=torch.float64)) - target) ** 2).mean().backward()
        opt.step()
    for name, p in layer.named_parameters():
        assert (p.detach() - before[name]).abs().max() > 1e-3, name
    sv = torch.linalg.svdvals(dense(layer, 3, 6, 6))
    assert (sv - 1).abs().max() < ORTHOGONALITY_TOL[layer_class]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_float32_norm_preservation_and_channels_last(device, layer_class):
    layer = layer_class(8, 16, 3, bias=False).to(device)
    x = torch.randn(16, 8, 17, 12, device=device)
    y = layer(x)
    assert y.dtype == torch.float32 and y.shape == (16, 16, 17, 12)
    ratio = y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert (ratio - 1).abs().max() < 1e-5
    assert rel_err(layer(x.to(memory_format=torch.channels_last)), y) < 1e-6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_circular_shift_equivariance(device, layer_class):
    layer = layer_class(3, 4, 3).double().to(device)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, device=device)
    shifted = layer(torch.roll(x, shifts=(2, -3), dims=(2, 3)))
    assert rel_err(shifted, torch.roll(layer(x), shifts=(2, -3), dims=(2, 3))) < 1e-12


@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_bad_input(layer_class):
    layer = layer_class(3, 4, 3, stride=2)
    with pytest.raises(ValueError, match="x must have 3 channels, got 2"):
        layer(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="x must be 4-D"):
        layer(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="divisible by the stride 2"):
        layer(torch.randn(1, 3, 7, 8))
    with pytest.raises(TypeError, match="x must have dtype"):
        layer(torch.ones(1, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        layer_class(0, 4, 3)
    with pytest.raises(ValueError, match="out_channels must be >= 1"):
        layer_class(3, 0, 3)
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        layer_class(3, 4, 2.5)


def test_bcop_bad_arguments():
    with pytest.raises(ValueError, match="bjorck_iters must be >= 1"):
        cs.nn.BCOPConv2d(3, 4, 3, bjorck_iters=0)
    with pytest.raises(ValueError, match=r"matrices must have shape \(2\(k-1\)\+1, c, c\)"):
        cs.nn.bcop_kernel(torch.randn(2, 4, 4), 4, 4)
    with pytest.raises(ValueError, match="matrices must have shape"):
        cs.nn.bcop_kernel(torch.randn(3, 4, 5), 4, 4)
    with pytest.raises(ValueError, match="c = max"):
        cs.nn.bcop_kernel(torch.randn(3, 4, 4), 5, 3)
    with pytest.raises(TypeError, match="matrices must have dtype"):
        cs.nn.bcop_kernel(torch.ones(3, 4, 4, dtype=torch.complex64), 4, 4)
