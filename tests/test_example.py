"""examples/digits_lipschitz.py: the network is 1-Lipschitz, so its certificates hold."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_lipschitz.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("digits_lipschitz", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layer", ["cayley", "bcop"])
def test_network_is_1_lipschitz(example, layer):
    model = example.make_model(layer).double().eval()
    with torch.no_grad():  # leave the orthogonal start: the bound must hold for any parameters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    for _ in range(3):
        x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(model, x).reshape(10, 64)
        assert torch.linalg.matrix_norm(J, 2) <= 1 + 1e-9


@pytest.mark.parametrize("layer", ["cayley", "bcop"])
def test_training_and_certificates(example, layer):
    result = example.train(layer, epochs=1, limit=256)
    assert 0.3 < result["clean"] <= 1 and 0 <= result["certified"] <= result["clean"]
    model = result["model"].eval()
    _, (x, y) = example.load_digits()
    x, y = x[:256], y[:256]
    with torch.no_grad():
        logits = model(x)
        top2 = logits.topk(2, dim=1)
        certified = (top2.indices[:, 0] == y) & (top2.values[:, 0] - top2.values[:, 1] > math.sqrt(2) * example.EPS)
        assert abs(certified.float().mean().item() - example.evaluate(model, x, y)[1]) < 1e-12
        # no perturbation of norm eps changes a certified prediction
        for _ in range(5):
            d = torch.randn_like(x)
            d = example.EPS * d / d.flatten(1).norm(dim=1)[:, None, None, None]
            assert (model(x + d).argmax(1)[certified] == y[certified]).all()
