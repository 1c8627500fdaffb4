"""examples/digits_lipschitz.py: the network is 1-Lipschitz, so its certificates hold."""

import math

import pytest
import torch
from helpers import load_example

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def example():
    return load_example("digits_lipschitz")


LAYERS = ["cayley", "bcop", "lot", "soc", "aol", "cpl", "sll"]


@pytest.mark.parametrize("layer", LAYERS)
def test_network_is_1_lipschitz(example, layer):
    model = example.make_model(layer).double().eval()
    with torch.no_grad():  # leave the orthogonal start: the bound must hold for any parameters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    for _ in range(3):
        x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(model, x).reshape(10, 64)
        # SOC's eval series is orthogonal to its truncation (about 1e-9 here)
        assert torch.linalg.matrix_norm(J, 2) <= 1 + (1e-7 if layer == "soc" else 1e-9)


@pytest.mark.parametrize("layer", LAYERS)
def test_training_and_certificates(example, layer):
    result = example.train(layer, epochs=1 if layer in ("cayley", "bcop", "lot") else 3, limit=256)
    assert result["clean"] > 0.3
    model = result["model"].eval()
    _, (x, y) = example.load_digits()
    x, y = x[:256], y[:256]
    checked = example.evaluate(model, x, y, attack_steps=20)
    L = checked["lipschitz"]  # 1 for the orthogonal layers, the measured (smaller) bound for AOL
    assert L <= 1 + 1e-5
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1)
    margin = top2.values[:, 0] - top2.values[:, 1]
    certified = (top2.indices[:, 0] == y) & (margin > math.sqrt(2) * example.EPS * L)
    assert certified.any()
    assert checked["certified"] == pytest.approx(certified.float().mean().item(), abs=1 / 256)
    assert checked["certified_flipped"] == 0 and checked["attacked"] >= checked["certified"]

    # the strongest single step against each prediction: along the gradient of its margin
    # over the runner-up, at L2 norm eps. A 1-Lipschitz network moves a margin by at most
    # sqrt(2) eps, so no certified prediction may flip.
    runner_up = top2.indices[:, 1:2]

    def margins(inputs):
        logits = model(inputs)
        return logits.gather(1, y[:, None])[:, 0] - logits.gather(1, runner_up)[:, 0]

    xa = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(margins(xa).sum(), xa)
    d = -example.EPS * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-30)[:, None, None, None]
    with torch.no_grad():
        drop = margins(x) - margins(x + d)
        assert drop.max() > 0.1 * example.EPS  # the step does attack
        assert drop.max() <= math.sqrt(2) * example.EPS * (1 + 1e-6)
        assert (model(x + d).argmax(1)[certified] == y[certified]).all()
