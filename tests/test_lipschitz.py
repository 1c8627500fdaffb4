"""cs.lipschitz_bound and its parts against the dense Jacobian, the exact
per-layer norms, the local lower bound, and clear errors."""

import math
import subprocess
import sys

import pytest
import torch
from structured import KERNEL_KINDS, structured_kernel
from torch import nn

import convspectra as cs
from convspectra import lipschitz as lip


def bound_of(*args, **kwargs) -> float:
    return float(cs.lipschitz_bound(*args, **kwargs).detach())


def jacobian_norm(model, shape, x=None) -> float:
    """||J|| of model at x (zeros by default) from its dense Jacobian, float64."""
    model = model.double().eval()
    x = torch.zeros(1, *shape, dtype=torch.float64) if x is None else x.double()
    J = torch.autograd.functional.jacobian(lambda t: model(t).flatten(), x)
    return float(torch.linalg.matrix_norm(J.reshape(J.shape[0], -1), ord=2))


def exact_layer_norms(model: nn.Sequential, shape) -> list[float]:
    """The exact norm of each layer of a linear Sequential, from its own dense Jacobian."""
    norms = []
    x = torch.zeros(1, *shape, dtype=torch.float64)
    for layer in model:
        norms.append(jacobian_norm(layer, tuple(x.shape[1:])))
        with torch.no_grad():
            x = layer(x)
    return norms


def batch_norm(c, seed):
    bn = nn.BatchNorm2d(c)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.1)
        bn.running_mean.copy_(torch.randn(c, generator=g))
    return bn


def linear_nets():
    """Linear networks (no activations) of every supported linear layer kind, in float64."""
    return {
        "convs": (nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(5, 4, 3, stride=2, padding=1),
                                nn.Conv2d(4, 6, 3, padding=2, dilation=2, padding_mode="circular"),
                                nn.Conv2d(6, 6, 3, padding=1, groups=3), nn.Flatten(), nn.Linear(96, 7)), (3, 8, 8)),
        "pool_bn": (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), batch_norm(4, 0), nn.AvgPool2d(2),
                                  nn.Conv2d(4, 4, 1), nn.PixelUnshuffle(2), nn.Conv2d(16, 3, 1),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(3, 2)), (2, 8, 12)),
        "shuffle": (nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, padding_mode="circular"), nn.PixelShuffle(2),
                                  nn.Conv2d(2, 2, 2, stride=2), nn.Identity()), (1, 5, 6)),
    }


@pytest.mark.parametrize("name", list(linear_nets()))
def test_linear_network_bound_holds_and_is_tight(name):
    model, shape = linear_nets()[name]
    model = model.double().eval()
    bound = bound_of(model, shape[1:], in_channels=shape[0])
    truth = jacobian_norm(model, shape)
    product = math.prod(exact_layer_norms(model, shape))
    assert bound >= truth * (1 - 1e-9)
    assert bound <= 1.1 * product
    assert bound >= product * (1 - 1e-9)  # never below the product of what it composes


@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_conv_rule_on_structured_kernels(kind, padding_mode, monkeypatch):
    # both the dense path and, with the dense limit at 0, the certified / circular path
    conv = nn.Conv2d(4, 3, 3, padding=1, padding_mode=padding_mode, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(structured_kernel(kind, 3, 4, 3))
    truth = jacobian_norm(conv, (4, 6, 7))
    dense = bound_of(conv, (6, 7))
    assert dense == pytest.approx(truth, rel=1e-9, abs=1e-12)
    monkeypatch.setattr(lip, "DENSE_MAX_ENTRIES", 0)
    report = cs.lipschitz_report(conv, (6, 7))
    assert report.bound >= truth * (1 - 1e-9) - 1e-12
    if padding_mode == "circular":
        assert report.bound == pytest.approx(truth, rel=1e-9, abs=1e-12)
        assert report.rows[0].method.startswith("exact circular")
    else:
        assert report.rows[0].method.startswith("certified")


def test_large_zero_padded_conv_is_certified_and_close():
    # beyond the dense limit: the certified bound against the true norm by a long power iteration
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False).double()
    x = torch.randn(1, 16, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(800):
            y = conv(x)
            x = torch.nn.functional.conv_transpose2d(y, conv.weight, padding=1)
            x = x / x.norm()
        truth = conv(x).norm().item()
    report = cs.lipschitz_report(conv, 32)
    assert report.rows[0].method.startswith("certified")
    assert truth * (1 - 1e-9) <= report.bound <= 1.1 * truth


def test_strided_and_grouped_conv_beyond_the_dense_limit(monkeypatch):
    monkeypatch.setattr(lip, "DENSE_MAX_ENTRIES", 0)
    for conv in [nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.Conv2d(3, 3, 3, padding=2, dilation=2,
                                                                               padding_mode="circular")]:
        conv = conv.double()
        assert bound_of(conv, 8) >= jacobian_norm(conv, (conv.in_channels, 8, 8)) * (1 - 1e-9)


def relu_nets():
    return [
        (nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                       nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(128, 5)), (2, 8, 8)),
        (nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), cs.nn.Residual(
            nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), batch_norm(6, 1), nn.GELU()), 0.5),
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 9, 3), nn.Sigmoid()), (3, 6, 6)),
    ]


@pytest.mark.parametrize("index", [0, 1])
def test_relu_network_bound_is_above_the_lower_bound(index):
    model, shape = relu_nets()[index]
    model = model.double().eval()
    bound = cs.lipschitz_bound(model, shape[1:])
    x = torch.randn(16, *shape, dtype=torch.float64)
    lower = cs.lipschitz_lower_bound(model, x, iters=100)
    assert 0 < float(lower) <= float(bound.detach())
    # each sample's value is a local Jacobian norm: never above the dense one at that point
    local = max(jacobian_norm(model, shape, x[i : i + 1]) for i in range(16))
    assert float(lower) <= local * (1 + 1e-9)
    assert float(lower) >= local * (1 - 1e-6)  # 100 power steps converge on these small nets


def test_residual_bound_is_one_plus_scaled_branch():
    f = nn.Conv2d(3, 3, 3, padding=1).double()
    model = cs.nn.Residual(f, scale=-0.25)
    rows = cs.lipschitz_report(model, 5).rows
    assert rows[0].type == "Residual" and rows[1].name == "f"
    assert rows[0].bound == pytest.approx(1 + 0.25 * rows[1].bound)
    assert rows[0].bound >= jacobian_norm(model, (3, 5, 5))


def test_orthogonal_network_bound_is_one():
    model = nn.Sequential(
        cs.nn.CayleyConv2d(3, 8, 3), cs.nn.MaxMin(), cs.nn.BCOPConv2d(8, 16, 3, stride=2), cs.nn.GroupSort(4),
        cs.nn.CayleyConv2d(16, 8, 3), cs.nn.MaxMin(), nn.Flatten(), cs.nn.OrthogonalLinear(8 * 16, 10),
        cs.nn.OrthogonalLinear(10, 10, method="bjorck"),
    )
    for p in model.parameters():  # away from the initialisation
        p.data.add_(0.3 * torch.randn_like(p))
    report = cs.lipschitz_report(model, 8)
    assert report.bound == pytest.approx(1.0, abs=1e-5)
    assert all(r.bound == pytest.approx(1.0, abs=1e-5) for r in report.rows)
    assert jacobian_norm(model, (3, 8, 8), torch.randn(1, 3, 8, 8)) <= 1 + 1e-5
    unverified = cs.lipschitz_report(model, 8, verify=False)
    assert unverified.bound == 1.0 and "assumed" in unverified.rows[0].method


def test_verify_measures_a_layer_that_is_not_orthogonal():
    # BCOP with one Bjorck step on ill-conditioned matrices is far from orthogonal (singular values
    # down to 1e-3): verify=True reports the layer's real norm, from its own operator
    layer = cs.nn.BCOPConv2d(4, 4, 3, bjorck_iters=1).double()
    with torch.no_grad():
        layer.matrices.copy_(torch.randn_like(layer.matrices) * torch.logspace(-3, 0, 4, dtype=torch.float64))
    s = torch.linalg.svdvals(cs.reference.dense_operator(layer.weight.detach(), (6, 6), "circular"))
    assert float(s[-1]) < 0.01
    with pytest.warns(RuntimeWarning, match="not orthogonal"):  # the layer's own eval-mode check speaks too
        assert bound_of(layer, 6) == pytest.approx(float(s[0]), rel=1e-9)


class BoundOf(nn.Module):
    """forward() is the model's Lipschitz bound, so functional_call can swap its parameters."""

    def __init__(self, model, input_size):
        super().__init__()
        self.model, self.input_size = model, input_size

    def forward(self):
        return cs.lipschitz_bound(self.model, self.input_size)


def test_bound_is_differentiable_gradcheck(monkeypatch):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2)).double()
    wrapped = BoundOf(model, 4)

    def bound(w, v):
        return torch.func.functional_call(wrapped, {"model.0.weight": w, "model.3.weight": v}, ())

    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 48, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(bound, (w, v))
    monkeypatch.setattr(lip, "DENSE_MAX_ENTRIES", 0)  # the certified path
    assert torch.autograd.gradcheck(bound, (w, v))


@pytest.mark.parametrize("act, slope", [
    (nn.ReLU(), 1.0), (nn.LeakyReLU(-3.0), 3.0), (nn.Tanh(), 1.0), (nn.Sigmoid(), 0.25), (nn.GELU(), None),
    (nn.GELU(approximate="tanh"), None), (nn.SiLU(), None), (nn.Mish(), None), (nn.ELU(2.0), 2.0),
    (nn.Softplus(), 1.0), (cs.nn.MaxMin(), 1.0), (cs.nn.GroupSort(3), 1.0),
])
def test_activation_constants_bound_the_slope(act, slope):
    shape = (6, 1, 1)
    bound = bound_of(act, (1, 1), in_channels=6)
    x = torch.linspace(-20, 20, 400_001, dtype=torch.float64)
    if isinstance(act, (cs.nn.MaxMin, cs.nn.GroupSort)):
        # sorting: a permutation per input, so ||J|| = 1 exactly
        assert jacobian_norm(act, shape, torch.randn(1, *shape)) == pytest.approx(1.0)
    else:
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(act.double()(x).sum(), x)
        assert bound >= float(g.abs().max())
        assert bound <= float(g.abs().max()) + 2e-4  # tight
    if slope is not None:
        assert bound == pytest.approx(slope)


def test_max_pool_rule_is_attained():
    for pool in [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=1, padding=1), nn.MaxPool2d(3, stride=2, ceil_mode=True),
                 nn.MaxPool2d(2, stride=1, dilation=2)]:
        bound = bound_of(pool, 7, in_channels=1)
        # one pixel raised in a zero image moves every window that contains it: the most such windows
        best = 0.0
        for i in range(7):
            for j in range(7):
                x = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
                x[0, 0, i, j] = 1.0
                best = max(best, float(pool(x).norm()))
        assert bound == pytest.approx(best)


def test_register_lipschitz_teaches_a_module():
    class Doubler(nn.Module):
        def forward(self, x):
            return 2 * x

    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), Doubler())
    with pytest.raises(TypeError, match="Doubler.*register_lipschitz"):
        cs.lipschitz_bound(model, 4)
    cs.register_lipschitz(Doubler, lambda module, shape: 2.0)
    try:
        report = cs.lipschitz_report(model, 4)
        assert report.rows[1].method == "registered rule" and report.rows[1].input_shape == (2, 4, 4)
        assert report.bound == pytest.approx(2 * float(lip._dense_norm(
            lambda x: model[0].double()(x), (1, 4, 4), (2, 4, 4), torch.float64)))
    finally:
        del lip._registered[Doubler]
    with pytest.raises(TypeError, match="module_type"):
        cs.register_lipschitz(int, lambda m, s: 1.0)
    with pytest.raises(TypeError, match="fn"):
        cs.register_lipschitz(Doubler, 1.0)


def test_clear_errors():
    class MyConv(nn.Conv2d):  # another forward: another map, never silently taken as a Conv2d
        def forward(self, x):
            return super().forward(x) ** 2

    with pytest.raises(TypeError, match="MyConv"):
        cs.lipschitz_bound(MyConv(1, 1, 3), 4)
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        cs.lipschitz_bound(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), 8)
    with pytest.raises(ValueError, match="cannot take an input of shape"):
        cs.lipschitz_bound(nn.Conv2d(3, 1, 3), 8, in_channels=2)
    with pytest.raises(ValueError, match="running statistics"):
        cs.lipschitz_bound(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False)), 4)
    with pytest.raises(ValueError, match="in_channels is required"):
        cs.lipschitz_bound(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), 4)
    with pytest.raises(ValueError, match="input_size is required"):
        cs.lipschitz_bound(nn.Conv2d(1, 1, 3))
    with pytest.raises(TypeError, match="model must be"):
        cs.lipschitz_bound(lambda x: x, 4)
    with pytest.raises(TypeError, match="input_size"):
        cs.lipschitz_bound(nn.Conv2d(1, 1, 3), "8")
    with pytest.raises(ValueError, match="iters"):
        cs.lipschitz_lower_bound(nn.Linear(2, 2), torch.randn(3, 2), iters=0)
    # flat inputs: no input size needed
    lin = nn.Linear(5, 3).double()
    assert bound_of(lin) == pytest.approx(float(torch.linalg.matrix_norm(lin.weight, 2)))


def test_report_table_and_modes_restored():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Dropout(0.3), nn.ReLU())
    model.train()
    report = cs.lipschitz_report(model, 5)
    assert model.training and all(m.training for m in model.modules())
    text = str(report)
    assert "Conv2d" in text and "1x5x5" in text and f"{report.bound:.6g}" in text
    assert [r.name for r in report.rows] == ["0", "1", "2"]


def test_cli_prints_the_report(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    expected = cs.lipschitz_report(model, 4, in_channels=2)
    out = subprocess.run([sys.executable, "-m", "convspectra.cli", "lipschitz", str(path), "--input-size", "2", "4", "4"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"{expected.bound:.6g}" in out.stdout and "Linear" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "convspectra.cli", "lipschitz", str(path), "--input-size", "2", "4"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "C H W" in bad.stderr


@pytest.mark.parametrize("scale", [1e-30, 1e30])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_bounds_scale_with_the_weights(scale, padding_mode, monkeypatch):
    # homogeneity: the bound of s * K is s times the bound of K, on the dense and the certified path
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode, bias=False).double()
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2).double())
    for dense in (True, False):
        if not dense:
            monkeypatch.setattr(lip, "DENSE_MAX_ENTRIES", 0)
        base = bound_of(model, 6)
        with torch.no_grad():
            conv.weight.mul_(scale)
        scaled = bound_of(model, 6)
        with torch.no_grad():
            conv.weight.div_(scale)
        assert scaled == pytest.approx(scale * base, rel=1e-9)
