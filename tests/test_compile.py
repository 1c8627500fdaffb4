"""torch.compile(fullgraph=True) of the paths that once broke the graph: the
zero-padding spectrum (data-dependent model choice), the exact zero-padded
norm (its Lanczos search is an op of its own) and eval-mode orthogonal layers
(their cache compares storage pointers, which a graph cannot)."""

import pytest
import torch
from torch import nn

import convspectra as cs
from helpers import DEVICES, rel_err
from structured import structured_kernel


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["gaussian", "duplicated_filters", "rank_one", "box", "zero"])
def test_zero_padding_spectrum_compiles(device, kind):
    # "box" (symmetric) takes the sine-grid branch, a centre-dominated kernel the clustered one (below)
    w = structured_kernel(kind, 4, 3, 3).to(device)
    compiled = torch.compile(lambda w: cs.singular_values(w, (6, 7), "zeros"), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(w), cs.singular_values(w, (6, 7), "zeros"), rtol=1e-12, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_padding_spectrum_compiles_in_the_clustered_regime(device):
    # a channel mixing with distinct singular values plus small spatial taps
    g = torch.Generator().manual_seed(3)
    w = 0.01 * torch.randn(3, 3, 3, 3, generator=g, dtype=torch.float64)
    w[:, :, 1, 1] += torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    w = w.to(device)
    from convspectra.spectrum import _grid, zero_padding
    assert zero_padding.is_clustered(_grid.circular_half(w, 8, 8))
    compiled = torch.compile(lambda w: cs.singular_values(w, (8, 8), "zeros"), fullgraph=True, backend="eager")
    assert rel_err(compiled(w), cs.singular_values(w, (8, 8), "zeros")) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_exact_zero_padded_norm_compiles_with_its_gradient(device):
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    eager_w, compiled_w = w.clone().requires_grad_(), w.clone().requires_grad_()
    eager = cs.spectral_norm(eager_w, (6, 7), "zeros", "exact")
    compiled = torch.compile(lambda w: cs.spectral_norm(w, (6, 7), "zeros", "exact"), fullgraph=True,
                             backend="aot_eager")(compiled_w)
    assert rel_err(compiled, eager) < 1e-12
    eager.backward()
    compiled.backward()
    assert rel_err(compiled_w.grad, eager_w.grad) < 1e-10
    # and the value is the dense operator's norm
    dense = cs.reference.dense_operator(w.cpu(), (6, 7), "zeros")
    assert rel_err(compiled, torch.linalg.matrix_norm(dense, ord=2)) < 1e-6


def test_lanczos_op_passes_opcheck():
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.convspectra.lanczos_top_vector, (w, 5, 6, [1, 1, 1, 1], 1e-8, 200),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layer", ["cayley", "bcop"])
def test_eval_mode_layers_compile(device, layer):
    torch.manual_seed(0)
    module = (cs.nn.CayleyConv2d(3, 4, 3) if layer == "cayley" else cs.nn.BCOPConv2d(3, 4, 3)).double().to(device)
    module.eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=device)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        eager = module(x)
        assert rel_err(compiled(x), eager) < 1e-12
        # a parameter update reaches the compiled module too (no stale cache in the graph)
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
        assert rel_err(compiled(x), module(x)) < 1e-12
        assert rel_err(compiled(x), eager) > 1e-6


LIPSCHITZ_LAYERS = {
    "lot": lambda: cs.nn.LOTConv2d(3, 4, 3), "soc": lambda: cs.nn.SOCConv2d(3, 4, 3),
    "aol": lambda: cs.nn.AOLConv2d(3, 4, 3), "cpl": lambda: cs.nn.CPLConv2d(3, 4, 3),
    "sll": lambda: cs.nn.SLLConv2d(3, 4, 3), "linear": lambda: nn.Sequential(
        nn.Flatten(), cs.nn.OrthogonalLinear(3 * 64, 8), cs.nn.GroupSort(4), cs.nn.MaxMin()),
}


@pytest.mark.parametrize("layer", list(LIPSCHITZ_LAYERS))
def test_lipschitz_layer_training_step_compiles(layer):
    # forward, loss and backward in one graph (backend aot_eager: the autograd graph is traced too)
    torch.manual_seed(0)
    module = LIPSCHITZ_LAYERS[layer]().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)

    def step(x):
        return module(x).square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    start = {k: v.clone() for k, v in module.state_dict().items()}  # SOC's power iteration moves its buffers
    loss = compiled(x)
    loss.backward()
    compiled_grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    module.load_state_dict(start)
    eager = step(x)
    eager.backward()
    assert rel_err(loss, eager) < 1e-10
    for g, p in zip(compiled_grads, module.parameters()):
        assert rel_err(g, p.grad) < 1e-8
