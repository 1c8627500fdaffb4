"""Derivatives of every public function beyond the first backward: double
backward (gradgradcheck), forward mode (torch.func.jvp and
torch.autograd.forward_ad), torch.func.grad / jacrev / hessian and vmap,
against the plain-PyTorch reference, finite differences, loops and plain
autograd; and the clear errors where a derivative is refused."""

import pytest
import torch
from torch.autograd import forward_ad
from torch.func import functional_call

import convspectra as cs
from helpers import DEVICES, rel_err

ref = cs.reference
F64 = torch.float64


def gauge_free(factors):
    """U diag(1, 2, ...) Vh: a function of an SVD that no phase of a singular
    vector pair changes."""
    U, S, Vh = factors
    return (U * torch.arange(1, S.shape[-1] + 1, dtype=S.dtype, device=U.device).to(U.dtype)) @ Vh


def forward_ad_tangent(f, x, t):
    with forward_ad.dual_level():
        return forward_ad.unpack_dual(f(forward_ad.make_dual(x, t))).tangent


def central_difference(f, x, t, h=1e-6):
    return (f(x + h * t) - f(x - h * t)) / (2 * h)


def grad_of(f, x):
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


def rows_of_jacobian(f, x):
    """The Jacobian from one plain backward per output element."""
    x = x.detach().clone().requires_grad_(True)
    y = f(x).flatten()
    return torch.stack([torch.autograd.grad(y[i], x, retain_graph=True)[0] for i in range(y.numel())])


def check_grad_and_jacrev(f, x, weights):
    """torch.func.grad of the weighted sum of f against plain autograd, and
    torch.func.jacrev of f against one backward per output; returns (loss, jacobian)."""

    def loss(X):
        return (f(X) * weights).sum()

    assert rel_err(torch.func.grad(loss)(x), grad_of(loss, x)) < 1e-12
    jac = torch.func.jacrev(f)(x)
    assert rel_err(jac.reshape(weights.numel(), -1), rows_of_jacobian(f, x).flatten(1)) < 1e-12
    return loss, jac


# ----------------------------------------------------------- matrix functions
# (public function, the same in plain torch)
LINALG = {
    "svdvals": (cs.linalg.svdvals, torch.linalg.svdvals),
    "svd": (lambda A: gauge_free(cs.linalg.svd(A)), lambda A: gauge_free(torch.linalg.svd(A, full_matrices=False))),
    "cayley": (cs.linalg.cayley, ref.cayley),
    "bjorck": (lambda A: cs.linalg.bjorck(A, 6), lambda A: ref.bjorck(A, 6)),
}
SHAPES = [(4, 3), (3, 4)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LINALG)
def test_linalg_double_backward(device, dtype, shape, name):
    f, _ = LINALG[name]
    A = torch.randn(2, *shape, dtype=dtype, device=device, requires_grad=True)
    assert torch.autograd.gradgradcheck(f, (A,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LINALG)
def test_linalg_forward_mode_matches_the_reference(device, dtype, shape, name):
    f, f_ref = LINALG[name]
    A = torch.randn(2, *shape, dtype=dtype, device=device)
    t = torch.randn_like(A)
    expected = torch.func.jvp(f_ref, (A,), (t,))[1]
    assert expected.abs().max() > 0
    assert rel_err(torch.func.jvp(f, (A,), (t,))[1], expected) < 1e-10
    assert rel_err(forward_ad_tangent(f, A, t), expected) < 1e-10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LINALG)
def test_linalg_func_transforms_match_autograd_and_loops(device, shape, name):
    f, f_ref = LINALG[name]
    A = torch.randn(2, *shape, dtype=F64, device=device)
    weights = torch.randn_like(f(A))
    loss, jac = check_grad_and_jacrev(f, A, weights)
    assert rel_err(torch.func.jacfwd(f)(A), jac) < 1e-10
    batch = torch.randn(3, 2, *shape, dtype=F64, device=device)
    assert rel_err(torch.vmap(f)(batch), torch.stack([f(X) for X in batch])) < 1e-12
    # forward over reverse: the reference's Hessian
    hessian = torch.func.hessian(loss)(A)
    expected = torch.autograd.functional.hessian(lambda X: (f_ref(X) * weights).sum(), A)
    assert rel_err(hessian, expected) < 1e-9
    assert rel_err(torch.func.jacrev(torch.func.jacrev(loss))(A), expected) < 1e-9


@pytest.mark.parametrize("device", DEVICES)
def test_linalg_vmap_of_grad_matches_a_loop(device):
    batch = torch.randn(3, 4, 3, dtype=F64, device=device)
    for f, _ in LINALG.values():
        weights = torch.randn_like(f(batch[0]))  # (||Q||_F of an orthonormal Q is constant)

        def loss(X):
            return (f(X) * weights).sum()

        per_matrix = torch.stack([grad_of(loss, X) for X in batch])
        assert rel_err(torch.vmap(torch.func.grad(loss))(batch), per_matrix) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LINALG)
def test_nested_forward_mode_raises(device, name):
    f, _ = LINALG[name]
    A = torch.randn(4, 3, dtype=F64, device=device)
    with pytest.raises(RuntimeError, match="nested forward-mode AD"):
        torch.func.jacfwd(torch.func.jacfwd(lambda X: f(X).sum()))(A)


# ------------------------------------------------------------- conv spectra
SIZE = (5, 4)


def spectrum_cases():
    """(name, public function, reference or None)."""
    yield "singular_values", lambda w: cs.singular_values(w, SIZE), lambda w: ref.singular_values(w, SIZE)
    yield ("singular_values_stride2", lambda w: cs.singular_values(w, (6, 4), stride=2),
           lambda w: ref.singular_values(w, (6, 4), stride=2))
    yield "singular_values_zeros", lambda w: cs.singular_values(w, SIZE, "zeros"), None
    yield "svd", lambda w: gauge_free(cs.conv_svd(w, SIZE)).real, lambda w: gauge_free(ref.conv_svd(w, SIZE)).real
    yield "symbol", lambda w: torch.view_as_real(cs.symbol(w, SIZE)), None


SPECTRUM = {name: rest for name, *rest in spectrum_cases()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SPECTRUM)
def test_spectrum_double_backward(device, name):
    f, _ = SPECTRUM[name]
    w = torch.randn(2, 2, 3, 3, dtype=F64, device=device, requires_grad=True)
    # a scalar loss keeps the check small; the weights make it depend on every value
    weights = torch.rand_like(f(w))
    assert torch.autograd.gradgradcheck(lambda x: (f(x) * weights).sum(), (w,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SPECTRUM)
def test_spectrum_forward_mode(device, name):
    f, f_ref = SPECTRUM[name]
    w = torch.randn(3, 2, 3, 3, dtype=F64, device=device)
    t = torch.randn_like(w)
    if f_ref is not None:
        expected = torch.func.jvp(f_ref, (w,), (t,))[1]
        tol = 1e-10
    else:
        expected = central_difference(f, w, t)
        tol = 1e-7
    assert rel_err(torch.func.jvp(f, (w,), (t,))[1], expected) < tol
    assert rel_err(forward_ad_tangent(f, w, t), expected) < tol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SPECTRUM)
def test_spectrum_func_transforms(device, name):
    f, f_ref = SPECTRUM[name]
    w = torch.randn(2, 2, 3, 3, dtype=F64, device=device)
    weights = torch.rand_like(f(w))
    loss, _ = check_grad_and_jacrev(f, w, weights)
    if f_ref is not None:
        expected = torch.autograd.functional.hessian(lambda x: (f_ref(x) * weights).sum(), w)
        assert rel_err(torch.func.hessian(loss)(w), expected) < 1e-9
    batch = torch.randn(3, 2, 2, 3, 3, dtype=F64, device=device)
    assert rel_err(torch.vmap(f)(batch), torch.stack([f(x) for x in batch])) < 1e-12


def test_singular_values_backward_without_kept_vectors_matches(monkeypatch):
    # a recorded backward with the forward's vectors dropped (large inputs) and several chunks
    from convspectra.spectrum import _grid

    w = torch.randn(3, 2, 3, 3, dtype=F64, requires_grad=True)
    weights = torch.rand(5 * 4 * 2, dtype=F64)
    expected = torch.autograd.functional.hessian(lambda x: (ref.singular_values(x, SIZE) * weights).sum(), w)
    monkeypatch.setattr(_grid, "KEEP_VECTORS_ELEMENTS", 0)
    monkeypatch.setattr(_grid, "CHUNK_ELEMENTS", 3 * 3 * 2)
    loss = (cs.singular_values(w, SIZE) * weights).sum()
    (g,) = torch.autograd.grad(loss, w, create_graph=True)
    assert rel_err(g, grad_of(lambda x: (ref.singular_values(x, SIZE) * weights).sum(), w)) < 1e-12
    rows = torch.stack([torch.autograd.grad(g.flatten()[i], w, retain_graph=True)[0] for i in range(w.numel())])
    assert rel_err(rows, expected.reshape(w.numel(), *w.shape)) < 1e-9


# ------------------------------------------------------------ spectral norms
NORMS = [(m, p) for m in cs.norms.NORM_METHODS for p in ("circular", "zeros")]
# Lanczos: the gradient holds the Ritz vector fixed, right to first order only
FIRST_ORDER_ONLY = {("exact", "zeros")}


def norm_of(method, padding):
    return lambda w: cs.spectral_norm(w, SIZE, padding, method)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,padding", [c for c in NORMS if c not in FIRST_ORDER_ONLY])
def test_spectral_norm_double_backward(device, method, padding):
    w = torch.randn(3, 2, 3, 3, dtype=F64, device=device, requires_grad=True)
    assert torch.autograd.gradgradcheck(norm_of(method, padding), (w,))


@pytest.mark.parametrize("device", DEVICES)
def test_spectral_norm_lanczos_refuses_double_backward(device):
    f = norm_of("exact", "zeros")
    w = torch.randn(3, 2, 3, 3, dtype=F64, device=device, requires_grad=True)
    (g,) = torch.autograd.grad(f(w), w, create_graph=True)
    assert rel_err(g, grad_of(f, w)) < 1e-12  # the first order is unchanged
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(g.sum(), w)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.func.jacrev(torch.func.jacrev(f))(w.detach())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,padding", NORMS)
def test_spectral_norm_forward_mode_and_grad(device, method, padding):
    f = norm_of(method, padding)
    w = torch.randn(3, 2, 3, 3, dtype=F64, device=device)
    t = torch.randn_like(w)
    expected = central_difference(f, w, t)
    tol = 1e-5 if (method, padding) in FIRST_ORDER_ONLY else 1e-7  # Lanczos converges to tol=1e-6
    assert rel_err(torch.func.jvp(f, (w,), (t,))[1], expected) < tol
    assert rel_err(forward_ad_tangent(f, w, t), expected) < tol
    assert rel_err(torch.func.grad(f)(w), grad_of(f, w)) < 1e-12
    if padding == "circular" and method in ("exact", "certified"):
        expected = torch.autograd.functional.hessian(lambda x: ref.spectral_norm(x, SIZE), w)
        assert rel_err(torch.func.hessian(f)(w), expected) < 1e-9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", cs.norms.CHEAP_METHODS)
def test_spectral_norm_vmap_matches_a_loop(device, method):
    f = norm_of(method, "circular")
    batch = torch.randn(3, 3, 2, 3, 3, dtype=F64, device=device)
    assert rel_err(torch.vmap(f)(batch), torch.stack([f(w) for w in batch])) < 1e-12


@pytest.mark.parametrize("method, padding", [("exact", "circular"), ("gram", "circular"), ("exact", "zeros"),
                                             ("certified", "zeros")])
def test_spectral_norm_vmap_of_grid_methods_matches_a_loop(method, padding):
    # zero padding, exact: one Lanczos search per kernel of the batch
    f = norm_of(method, padding)
    batch = torch.randn(3, 3, 2, 3, 3, dtype=F64)
    assert rel_err(torch.vmap(f)(batch), torch.stack([f(w) for w in batch])) < 1e-12


def test_first_order_only_refuses_a_second_derivative():
    x = torch.randn(4, dtype=F64, requires_grad=True)

    def f(x):
        return cs._autograd.first_order_only(x, "f").pow(3).sum()

    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    assert rel_err(g, 3 * x.square()) < 1e-15
    assert rel_err(torch.func.grad(f)(x.detach()), 3 * x.square()) < 1e-15
    assert rel_err(torch.func.jvp(f, (x.detach(),), (torch.ones_like(x),))[1], 3 * x.square().sum()) < 1e-15
    for second in (lambda: torch.autograd.grad(g.sum(), x), lambda: torch.func.hessian(f)(x.detach()),
                   lambda: torch.func.jacrev(torch.func.jacrev(f))(x.detach())):
        with pytest.raises(RuntimeError, match="f: double backward is not supported"):
            second()


def test_clip_singular_values_refuses_every_derivative():
    w = torch.randn(3, 2, 3, 3, dtype=F64, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(cs.clip_singular_values(w, SIZE, 0.5), cs.clip_singular_values(w.detach(), SIZE, 0.5))
    out = cs.clip_singular_values(w, SIZE, 0.5)
    for derivative in (lambda: torch.autograd.grad(out.sum(), w),
                       lambda: torch.func.grad(lambda x: cs.clip_singular_values(x, SIZE, 0.5).sum())(w.detach()),
                       lambda: torch.func.jvp(lambda x: cs.clip_singular_values(x, SIZE, 0.5), (w.detach(),),
                                              (torch.ones_like(w),)),
                       lambda: forward_ad_tangent(lambda x: cs.clip_singular_values(x, SIZE, 0.5), w.detach(),
                                                  torch.ones_like(w))):
        with pytest.raises(RuntimeError, match="clip_singular_values is not differentiable"):
            derivative()


# ------------------------------------------------------ penalty and layers
def penalty_model():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(3, 2, 3, padding=1, padding_mode="circular")).double()


class Penalised(torch.nn.Module):
    """The penalty of a model as a module's output, for functional_call."""

    def __init__(self, net, method):
        super().__init__()
        self.net, self.method = net, method

    def forward(self):
        return cs.nn.spectral_penalty(self.net, (6, 6), self.method)


@pytest.mark.parametrize("device", DEVICES)
def test_spectral_penalty_derivatives(device):
    module = Penalised(penalty_model().to(device), "gram")
    names = [n for n, _ in module.named_parameters()]

    def penalty(*values):
        return functional_call(module, dict(zip(names, values)), ())

    values = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    assert torch.autograd.gradgradcheck(penalty, values)
    plain = torch.autograd.grad(module(), list(module.parameters()), allow_unused=True)
    functional = torch.func.grad(lambda v: penalty(*v))(tuple(v.detach() for v in values))
    for a, b in zip(functional, plain):
        assert (a == 0).all() if b is None else rel_err(a, b) < 1e-12


def cayley_layer(device):
    layer = cs.nn.CayleyConv2d(2, 3, 3).double().to(device)
    with torch.no_grad():
        layer.bias.normal_()

    def reference(p, x):
        return ref.cayley_conv2d(x, p["weight"], p["alpha"], p["bias"])

    return layer, reference


def bcop_layer(device):
    layer = cs.nn.BCOPConv2d(2, 3, 3, bjorck_iters=8).double().to(device)
    with torch.no_grad():
        layer.bias.normal_()
        layer.matrices.add_(0.1 * torch.randn_like(layer.matrices))

    def reference(p, x):
        return ref.bcop_conv2d(x, p["matrices"], 3, p["bias"], iters=8)

    return layer, reference


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [cayley_layer, bcop_layer], ids=["cayley", "bcop"])
def test_layer_derivatives_through_functional_call(device, make):
    layer, reference = make(device)
    x = torch.randn(2, 2, 4, 4, dtype=F64, device=device)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    weights = torch.randn_like(layer(x))

    def loss(p, f=lambda p: functional_call(layer, p, (x,))):
        return (f(p) * weights).sum()

    def loss_ref(p):
        return loss(p, lambda p: reference(p, x))

    # grad: plain autograd on the module
    plain = torch.autograd.grad(loss(dict(layer.named_parameters())), list(layer.parameters()))
    for a, b in zip(torch.func.grad(loss)(params).values(), plain):
        assert rel_err(a, b) < 1e-12
    # jvp: the reference layer
    tangents = {k: torch.randn_like(v) for k, v in params.items()}
    expected = torch.func.jvp(loss_ref, (params,), (tangents,))[1]
    assert rel_err(torch.func.jvp(loss, (params,), (tangents,))[1], expected) < 1e-9
    # vmap over an ensemble of parameters: a loop
    stacked = {k: torch.stack([v, v + 0.1 * torch.randn_like(v)]) for k, v in params.items()}
    looped = torch.stack([functional_call(layer, {k: v[i] for k, v in stacked.items()}, (x,)) for i in range(2)])
    assert rel_err(torch.vmap(lambda p: functional_call(layer, p, (x,)))(stacked), looped) < 1e-12
    # second order: gradgradcheck on the free parameter, and the reference's Hessian
    key = "weight" if "weight" in params else "matrices"

    def of_key(v):
        return loss({**params, key: v})

    assert torch.autograd.gradgradcheck(of_key, (params[key].clone().requires_grad_(True),))
    expected = torch.autograd.functional.hessian(lambda v: loss_ref({**params, key: v}), params[key])
    assert rel_err(torch.func.hessian(of_key)(params[key]), expected) < 1e-8


@pytest.mark.parametrize("device", DEVICES)
def test_bcop_kernel_derivatives(device):
    M = torch.randn(5, 3, 3, dtype=F64, device=device)

    def f(m):
        return cs.nn.bcop_kernel(m, 3, 2, iters=6)

    def f_ref(m):
        return ref.bcop_kernel(m, 3, 2, iters=6)

    assert torch.autograd.gradgradcheck(lambda m: f(m).square().sum(), (M.clone().requires_grad_(True),))
    t = torch.randn_like(M)
    assert rel_err(torch.func.jvp(f, (M,), (t,))[1], torch.func.jvp(f_ref, (M,), (t,))[1]) < 1e-10
    assert rel_err(torch.func.jacrev(f)(M), torch.func.jacrev(f_ref)(M)) < 1e-10


def test_compiled_training_step_traces_the_ops():
    # torch.compile traces the registered ops (Dynamo cannot trace a custom jvp): one graph, eager's gradient
    w = torch.randn(3, 2, 3, 3, dtype=F64)

    def loss(w):
        return (cs.singular_values(w, SIZE).sum() + cs.linalg.cayley(w[:, :, 0]).sum()
                + cs.linalg.bjorck(w[:, :, 1], 4).sum() + cs.spectral_norm(w, SIZE, method="gram"))

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    assert rel_err(grad_of(compiled, w), grad_of(loss, w)) < 1e-12
