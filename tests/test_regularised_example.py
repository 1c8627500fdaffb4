"""examples/regularised_resnet.py: its ResNet is bounded by cs.lipschitz_bound
(Residual and BatchNorm included) and one short run trains."""

import pytest
import torch
from helpers import load_example

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def example():
    return load_example("regularised_resnet")


def test_resnet_bound_holds(example):
    import convspectra as cs

    model = example.make_model().double()
    model.train()
    with torch.no_grad():  # running statistics away from their initial values
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8, dtype=torch.float64))
    model.eval()
    bound = cs.lipschitz_bound(model, 8)
    lower = cs.lipschitz_lower_bound(model, torch.rand(8, 1, 8, 8, dtype=torch.float64), iters=50)
    assert 0 < float(lower) <= float(bound.detach())
    kinds = {r.type for r in cs.lipschitz_report(model, 8).rows}
    assert {"Residual", "BatchNorm2d", "Conv2d", "AdaptiveAvgPool2d", "Linear"} <= kinds


def test_one_short_run(example):
    result = example.run(weight=0.01, seed=0, n_train=64, epochs=2)
    assert set(result) == {"train", "test", "gap", "lipschitz", "seconds"}
    assert 0 <= result["test"] <= 1 and result["gap"] == pytest.approx(result["train"] - result["test"])
    assert result["lipschitz"] > 0
