"""cs.nn.spectral_penalty against per-layer norms and dense operators."""

import gc
import weakref

import pytest
import torch
from torch import nn

import convspectra as cs
from helpers import DEVICES, dense_layer_operator
from structured import structured_kernel


def small_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),                                   # sees 12x10
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular"),          # 12x10
        nn.Conv2d(8, 6, 3, stride=2, padding=1),                         # 12x10 -> 6x5
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=2),             # 6x5
        nn.Conv2d(6, 4, 1),                                              # 6x5
    ).double()


def dense_layer_norm(conv, size):
    """||layer||_2 of a Conv2d (no bias) from its dense matrix."""
    c_in, (H, W) = conv.in_channels, size
    n = c_in * H * W
    basis = torch.eye(n, dtype=torch.float64).reshape(n, c_in, H, W)
    with torch.no_grad():
        out = nn.functional.conv2d(
            nn.functional.pad(basis, (conv.padding[1],) * 2 + (conv.padding[0],) * 2, mode="circular")
            if conv.padding_mode == "circular" else basis,
            conv.weight.double(), None, conv.stride, 0 if conv.padding_mode == "circular" else conv.padding,
            conv.dilation, conv.groups,
        )
    return torch.linalg.matrix_norm(out.reshape(n, -1), ord=2).item()


def test_input_sizes_are_recorded():
    model = small_model()
    sizes = cs.nn.conv_input_sizes(model, (12, 10))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [sizes[c] for c in convs] == [(12, 10), (12, 10), (12, 10), (6, 5), (6, 5)]


def test_input_size_cache_keeps_nothing_alive_and_follows_the_layers():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    assert cs.nn.conv_input_sizes(conv, (6, 5)) == {conv: (6, 5)}
    ref = weakref.ref(conv)
    del conv
    gc.collect()
    assert ref() is None
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
    cs.nn.conv_input_sizes(model, (6, 5))
    model[0] = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    model.append(nn.Conv2d(3, 3, 3, padding=1))
    assert list(cs.nn.conv_input_sizes(model, (6, 5)).items()) == [(model[0], (6, 5)), (model[1], (3, 3))]


@pytest.mark.parametrize("method", ["gram", "certified", "reshape", "l1", "sum_taps"])
def test_penalty_bounds_every_layer(method):
    model = small_model()
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    sizes = cs.nn.conv_input_sizes(model, (12, 10))
    per_layer = []
    for conv in convs:
        value = cs.nn.spectral_penalty(nn.Sequential(conv), sizes[conv], method, in_channels=conv.in_channels)
        per_layer.append(value.item())
        # a bound of the layer's true operator, whatever its padding, stride, groups, dilation
        assert value.item() >= dense_layer_norm(conv, sizes[conv]) * (1 - 1e-9), conv
    total = cs.nn.spectral_penalty(model, (12, 10), method)
    assert total.item() == pytest.approx(sum(per_layer), rel=1e-12)


def test_penalty_exact_is_the_norm_of_circular_layers():
    model = small_model()
    conv = model[3]  # circular, stride 1
    got = cs.nn.spectral_penalty(nn.Sequential(conv), (12, 10), "exact", in_channels=8)
    assert got.item() == pytest.approx(dense_layer_norm(conv, (12, 10)), rel=1e-10)
    # a dilated kernel (9 x 9) larger than the 7 x 6 input: the same operator, folded onto the input's grid
    torch.manual_seed(25)
    wide = nn.Conv2d(2, 2, 3, dilation=4, padding=4, padding_mode="circular", bias=False).double()
    got = cs.nn.spectral_penalty(nn.Sequential(wide), (7, 6), "exact", in_channels=2)
    assert got.item() == pytest.approx(dense_layer_norm(wide, (7, 6)), rel=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_penalty_is_differentiable_and_leaves_batchnorm_alone(device):
    model = small_model().to(device).train()
    bn = model[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    penalty = cs.nn.spectral_penalty(model, (12, 10))
    penalty.backward()
    for conv in (m for m in model if isinstance(m, nn.Conv2d)):
        assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
        assert conv.weight.grad.abs().sum() > 0
    assert model.training and bn.training
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert torch.equal(bn.num_batches_tracked, before[2])


def test_penalty_target_and_training_step():
    torch.manual_seed(0)
    model = small_model()
    free = cs.nn.spectral_penalty(model, (12, 10), target=1e6)
    assert free.item() == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = cs.nn.spectral_penalty(model, (12, 10)).item()
    for _ in range(5):
        opt.zero_grad()
        cs.nn.spectral_penalty(model, (12, 10)).backward()
        opt.step()
    assert cs.nn.spectral_penalty(model, (12, 10)).item() < start


def test_penalty_bad_arguments():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        cs.nn.spectral_penalty(torch.randn(3, 3, 3, 3), (8, 8))
    with pytest.raises(ValueError, match="method must be one of"):
        cs.nn.spectral_penalty(small_model(), (8, 8), method="svd")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        cs.nn.spectral_penalty(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), (8, 8))
    with pytest.raises(ValueError, match="input_size must be >= 1"):
        cs.nn.spectral_penalty(small_model(), (0, 8))
    with pytest.raises(ValueError, match="target must be a positive"):
        cs.nn.spectral_penalty(small_model(), (8, 8), target=-1.0)
    assert cs.nn.spectral_penalty(nn.Linear(3, 3), (8, 8)).item() == 0.0


@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("k,padding,dilation", [(2, 1, 1), (3, 2, 1), (3, 0, 1), (3, "valid", 1), (2, "same", 1),
                                                (3, 3, 2), (5, 1, 1), (1, 1, 1)])
@pytest.mark.parametrize("kind", ["gaussian", "duplicated_filters", "constant_scaled", "zero"])
def test_penalty_follows_the_layers_padding(mode, k, padding, dilation, kind):
    """Any padding amount, not only 'same': every bound at least the layer's
    true norm (its dense operator), and for zero padding "exact" equal to it
    (it fell below it when the layer was taken as 'same')."""
    torch.manual_seed(k)
    conv = torch.nn.Conv2d(3, 4, k, padding=padding, dilation=dilation, padding_mode=mode, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(structured_kernel(kind, 4, 3, k, seed=k))
    H = W = 6
    true = float(torch.linalg.matrix_norm(dense_layer_operator(conv, 3, H, W), 2))
    for method in cs.norms.NORM_METHODS:
        value = float(cs.nn.spectral_penalty(conv, (H, W), method, in_channels=3).detach())
        if method == "exact" and mode == "zeros":
            assert abs(value - true) <= 1e-6 * true + 1e-12, (method, value, true)
        else:
            assert value >= true * (1 - 1e-12), (method, value, true)


def test_penalty_checks_the_norm_arguments_for_every_layer():
    conv = torch.nn.Conv2d(3, 4, 2, padding=1, bias=False)
    with pytest.raises(TypeError, match="tolerance"):
        cs.nn.spectral_penalty(conv, (6, 6), "exact", tolerance=1e-3)
    with pytest.raises(ValueError, match="steps"):
        cs.nn.spectral_penalty(conv, (6, 6), "gram", steps=999)
    # steps belongs to the Gram iteration: the exact norm neither checks nor uses it
    exact = cs.nn.spectral_penalty(conv, (6, 6), "exact")
    assert torch.equal(cs.nn.spectral_penalty(conv, (6, 6), "exact", steps=999), exact)
    with pytest.raises(ValueError, match="tol"):
        cs.nn.spectral_penalty(conv, (6, 6), "exact", tol=-1.0)


def test_penalty_takes_the_input_channels_of_a_first_convspectra_layer():
    torch.manual_seed(0)
    model = nn.Sequential(cs.nn.CayleyConv2d(3, 8, 3), nn.Conv2d(8, 6, 3, padding=1))
    expected = cs.nn.spectral_penalty(model, (8, 8), in_channels=3)
    torch.testing.assert_close(cs.nn.spectral_penalty(model, (8, 8)), expected)
    assert float(expected) == pytest.approx(float(cs.spectral_norm(model[1].weight, (8, 8), "zeros", "certified")))
    model = nn.Sequential(cs.nn.CPLConv2d(2, 4, 3), nn.Conv2d(2, 5, 3, stride=2, padding=1))
    torch.testing.assert_close(cs.nn.spectral_penalty(model, (8, 8)), cs.nn.spectral_penalty(model, (8, 8), in_channels=2))

    class Net(nn.Module):  # keeps a width counter named in_channels, as many ResNets do
        def __init__(self):
            super().__init__()
            self.in_channels = 16
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.body = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            return self.body(self.stem(x))

    net = Net()
    torch.testing.assert_close(cs.nn.spectral_penalty(net, (8, 8)), cs.nn.spectral_penalty(net, (8, 8), in_channels=3))
