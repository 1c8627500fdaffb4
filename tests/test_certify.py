"""Certified radii and accuracy against their formula and a PGD attack; the
certified-training losses against a direct formula."""

import math

import pytest
import torch
from torch import nn

import convspectra as cs


def orthogonal_net(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(cs.nn.CayleyConv2d(1, 8, 3), cs.nn.MaxMin(), cs.nn.BCOPConv2d(8, 16, 3, stride=2),
                          cs.nn.GroupSort(2), nn.Flatten(), cs.nn.OrthogonalLinear(16 * 16, 4))
    for p in model.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    return model.eval()


def test_certified_radius_formula():
    logits = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, 2.5], [1.0, 1.0, 0.0]])
    r = cs.certified_radius(logits, 2.0)
    assert torch.allclose(r, torch.tensor([2.0, 0.5, 0.0]) / (math.sqrt(2) * 2.0))
    labelled = cs.certified_radius(logits, torch.tensor(2.0), labels=torch.tensor([0, 1, 0]))
    # sample 1 is misclassified (label 1 below class 2): radius 0
    assert torch.allclose(labelled, torch.tensor([2.0, 0.0, 0.0]) / (math.sqrt(2) * 2.0))
    with pytest.raises(ValueError, match="lipschitz"):
        cs.certified_radius(logits, 0.0)
    with pytest.raises(ValueError, match="lipschitz"):
        cs.certified_radius(logits, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        cs.certified_radius(logits[:, :1], 1.0)
    with pytest.raises(ValueError, match="target"):
        cs.certified_radius(logits, 1.0, labels=torch.tensor([0, 1]))


def test_certified_samples_survive_the_attack():
    model = orthogonal_net()
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right, with margins of every size
    L = cs.lipschitz_bound(model, 8).detach()
    assert float(L) == pytest.approx(1.0, abs=1e-5)
    margins = cs.nn.losses.margins(model(x).detach(), y)
    middle = margins.sort().values[31:33].mean()  # half the samples certified, none at the threshold
    eps = float(middle) / (math.sqrt(2) * float(L))
    certified = cs.certified_radius(model(x).detach(), L, y) > eps
    assert 0 < int(certified.sum()) < 64
    assert cs.certified_accuracy(model, x, y, eps) == pytest.approx(float(certified.float().mean()))
    assert cs.certified_accuracy(model, x, y, eps, lipschitz=L) == pytest.approx(float(certified.float().mean()))
    x_adv = cs.pgd_l2(model, x, y, eps, steps=100, restarts=2)
    assert float(torch.linalg.vector_norm((x_adv - x).flatten(1), dim=1).max()) <= eps * (1 + 1e-5)
    with torch.no_grad():
        flipped = model(x_adv).argmax(1) != y
    assert not bool((flipped & certified).any())
    # the attack is not a no-op: at 4x the radius it flips some samples the bound left uncertified
    x_far = cs.pgd_l2(model, x, y, 4 * eps, steps=100)
    with torch.no_grad():
        assert bool((model(x_far).argmax(1) != y).any())


def test_certified_accuracy_checks_its_arguments():
    model = orthogonal_net()
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="eps"):
        cs.certified_accuracy(model, x, y, -1.0)
    with pytest.raises(ValueError, match="y must be"):
        cs.certified_accuracy(model, x, y[:3], 0.1)
    with pytest.raises(TypeError, match="model must be"):
        cs.certified_accuracy(lambda t: t, x, y, 0.1)
    with pytest.raises(ValueError, match="eps"):
        cs.pgd_l2(model, x, y, 0.0)
    model.train()
    cs.certified_accuracy(model, x, y, 0.1)
    assert model.training  # modes restored


def test_offset_cross_entropy_formula():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    offset, t = 0.7, 0.25
    loss = cs.nn.OffsetCrossEntropy(offset, temperature=t)(logits, y)
    expected = 0.0
    for i in range(6):
        z = logits[i].clone()
        z = z - offset * (torch.arange(5) == y[i]).double()
        expected = expected - t * torch.log_softmax(z / t, 0)[y[i]]
    assert torch.allclose(loss, expected / 6)
    assert torch.autograd.gradcheck(lambda z: cs.nn.OffsetCrossEntropy(offset, t)(z, y), (logits,))
    none = cs.nn.OffsetCrossEntropy(offset, t, reduction="none")(logits, y)
    assert none.shape == (6,)
    with pytest.raises(ValueError, match="offset"):
        cs.nn.OffsetCrossEntropy(-1.0)
    with pytest.raises(ValueError, match="temperature"):
        cs.nn.OffsetCrossEntropy(1.0, temperature=0.0)
    with pytest.raises(ValueError, match="target"):
        cs.nn.OffsetCrossEntropy(1.0)(logits, y.float())


def test_margin_hinge_formula():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.2, 0.9]], requires_grad=True)
    y = torch.tensor([0, 2, 1])
    loss = cs.nn.MarginHingeLoss(0.5, reduction="none")(logits, y)
    # margins: 1.0, 1 - 3 = -2, 1.2 - 1.0 = 0.2
    assert torch.allclose(loss, torch.tensor([0.0, 2.5, 0.3]))
    assert torch.allclose(cs.nn.MarginHingeLoss(0.5)(logits, y), loss.mean())
    with pytest.raises(ValueError, match="reduction"):
        cs.nn.MarginHingeLoss(0.5, reduction="max")
