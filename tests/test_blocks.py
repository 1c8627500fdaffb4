"""MaxMin, GroupSort, OrthogonalLinear and Residual against direct formulas,
their dense Jacobians and gradcheck."""

import pytest
import torch
from structured import MATRIX_KINDS, structured_matrix
from torch import nn

import convspectra as cs


@pytest.mark.parametrize("shape", [(3, 6), (2, 4, 5, 3)])
def test_maxmin_pairs_the_two_halves(shape):
    x = torch.randn(shape, dtype=torch.float64)
    y = cs.nn.MaxMin()(x)
    half = shape[1] // 2
    a, b = x[:, :half], x[:, half:]
    assert torch.equal(y[:, :half], torch.maximum(a, b)) and torch.equal(y[:, half:], torch.minimum(a, b))


@pytest.mark.parametrize("group", [1, 2, 3, 6])
def test_groupsort_sorts_each_group(group):
    x = torch.randn(4, 6, 3, 2, dtype=torch.float64)
    y = cs.nn.GroupSort(group)(x)
    for g in range(6 // group):
        block = x[:, g * group : (g + 1) * group]
        assert torch.equal(y[:, g * group : (g + 1) * group], block.sort(dim=1, descending=True).values)


@pytest.mark.parametrize("act", [cs.nn.MaxMin(), cs.nn.GroupSort(3)])
def test_sorting_activations_preserve_gradient_norms(act):
    x = torch.randn(1, 6, 2, 2, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda t: act(t).flatten(), x).reshape(24, 24)
    # a permutation matrix: every singular value 1
    assert torch.allclose(torch.linalg.svdvals(J), torch.ones(24, dtype=torch.float64))
    assert torch.autograd.gradcheck(act, (x.requires_grad_(),))


def test_sorting_activations_name_the_bad_channel_count():
    with pytest.raises(ValueError, match="divisible by 2, got 5"):
        cs.nn.MaxMin()(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        cs.nn.GroupSort(4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="group_size"):
        cs.nn.GroupSort(0)
    with pytest.raises(ValueError, match="channel dimension"):
        cs.nn.MaxMin()(torch.randn(4))


@pytest.mark.parametrize("method, tol", [("cayley", 1e-10), ("bjorck", 1e-8)])
@pytest.mark.parametrize("inf, outf", [(6, 6), (8, 3), (3, 8)])
def test_orthogonal_linear_is_orthogonal(method, tol, inf, outf):
    layer = cs.nn.OrthogonalLinear(inf, outf, method=method).double()
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn_like(layer.weight))
    Q = layer.orthogonal_weight()
    gram = Q @ Q.T if outf < inf else Q.T @ Q
    assert torch.allclose(gram, torch.eye(min(inf, outf), dtype=torch.float64), atol=tol)
    x = torch.randn(5, inf, dtype=torch.float64)
    assert torch.allclose(layer(x), x @ Q.T + layer.bias)


@pytest.mark.parametrize("kind", MATRIX_KINDS)
@pytest.mark.parametrize("inf, outf", [(6, 4), (5, 5)])
def test_orthogonal_linear_cayley_on_structured_weights(kind, inf, outf):
    # the Cayley map is orthogonal for every weight, rank-deficient, duplicated or scaled
    layer = cs.nn.OrthogonalLinear(inf, outf).double()
    with torch.no_grad():
        layer.weight.copy_(structured_matrix(kind, outf, inf, torch.float64, torch.Generator().manual_seed(0)))
    Q = layer.orthogonal_weight()
    assert torch.allclose(Q @ Q.T, torch.eye(outf, dtype=torch.float64), atol=1e-10)


def test_orthogonal_linear_gradcheck_cache_and_errors():
    for method in ("cayley", "bjorck"):
        layer = cs.nn.OrthogonalLinear(4, 3, method=method).double()
        x = torch.randn(2, 4, dtype=torch.float64)
        w = layer.weight.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda w: torch.func.functional_call(layer, {"weight": w}, (x,)), (w,))
    layer = cs.nn.OrthogonalLinear(4, 3).eval()
    with torch.no_grad():
        first = layer._cached((torch.device("cpu"),), layer.orthogonal_weight)
        assert layer._cached((torch.device("cpu"),), layer.orthogonal_weight) is first
        layer.weight.add_(0.1)
        changed = layer(torch.eye(4))
    assert torch.allclose(changed - layer.bias, layer.orthogonal_weight().T, atol=1e-6)
    with pytest.raises(ValueError, match="4 features"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match="method"):
        cs.nn.OrthogonalLinear(4, 3, method="qr")
    with pytest.raises(ValueError, match="in_features"):
        cs.nn.OrthogonalLinear(0, 3)


def test_residual():
    f = nn.Linear(3, 3)
    r = cs.nn.Residual(f, scale=0.5)
    x = torch.randn(2, 3)
    assert torch.allclose(r(x), x + 0.5 * f(x))
    with pytest.raises(ValueError, match="keep the shape"):
        cs.nn.Residual(nn.Linear(3, 2))(x)
    with pytest.raises(TypeError, match="f must be"):
        cs.nn.Residual(lambda t: t)
    with pytest.raises(TypeError, match="scale"):
        cs.nn.Residual(f, scale=float("nan"))
