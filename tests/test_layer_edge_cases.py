"""Degenerate shapes and parameters of cs.nn.CayleyConv2d and cs.nn.BCOPConv2d:
empty batches (as nn.Conv2d), empty images (a clear error), zero parameters
(an orthogonal layer, finite gradients), rank-deficient BCOP matrices (a
warning), constructor and bcop_kernel arguments (errors naming them)."""

import warnings

import pytest
import torch

import convspectra as cs
from helpers import dense_layer_operator as dense
from helpers import rel_err

LAYERS = [cs.nn.CayleyConv2d, cs.nn.BCOPConv2d]
LAYER_IDS = [c.__name__ for c in LAYERS]
# (in, out, k, stride, H, W): square, tall, wide, strided isometry (in * s^2 == out), strided co-isometry
CASES = [(3, 3, 3, 1, 5, 4), (2, 5, 3, 1, 4, 5), (5, 3, 2, 1, 4, 4), (2, 8, 3, 2, 4, 6), (3, 5, 3, 2, 4, 4)]
CASE_IDS = ["x".join(map(str, c)) for c in CASES]


def channel_identity(x: torch.Tensor, c_out: int, stride: int) -> torch.Tensor:
    """Pixel unshuffle, then the first min(c, c_out) channels kept and the rest zero: [I; 0] or [I 0]."""
    x = torch.nn.functional.pixel_unshuffle(x, stride)
    c = x.shape[1]
    if c >= c_out:
        return x[:, :c_out]
    return torch.cat([x, x.new_zeros(x.shape[0], c_out - c, *x.shape[2:])], 1)


def channel_identity_operator(c_in: int, c_out: int, stride: int, H: int, W: int) -> torch.Tensor:
    n = c_in * H * W
    basis = torch.eye(n, dtype=torch.float64).reshape(n, c_in, H, W)
    return channel_identity(basis, c_out, stride).reshape(n, -1).T


def dense_bias(layer, c_in, H, W):
    """What the bias adds to every column of the dense operator."""
    with torch.no_grad():
        b = layer(torch.zeros(1, c_in, H, W, dtype=torch.float64)).reshape(-1, 1)
    return b


# ---- empty batches and empty images -------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layer_class", LAYERS, ids=LAYER_IDS)
def test_empty_batch_gives_an_empty_output_and_backward_works(layer_class, stride):
    layer = layer_class(3, 4, 3, stride=stride).double()
    conv = torch.nn.Conv2d(3, 4, 3, stride=stride, padding=1, padding_mode="circular").double()
    x = torch.randn(0, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    # the shape nn.Conv2d (circular padding k//2) gives, and that of the same layer on one image
    assert y.shape == conv(x).shape == (0, *layer(torch.randn(1, 3, 8, 6, dtype=torch.float64)).shape[1:])
    assert y.shape == (0, 4, 8 // stride, 6 // stride)
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for name, p in layer.named_parameters():  # as nn.Conv2d: a zero gradient
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), name
    with torch.no_grad():  # and the eval-mode cache path
        assert layer.eval()(x).shape == y.shape


@pytest.mark.parametrize("layer_class", LAYERS, ids=LAYER_IDS)
def test_empty_image_is_an_error_naming_x(layer_class):
    for stride in (1, 2):
        layer = layer_class(3, 4, 3, stride=stride)
        for shape in [(2, 3, 0, 6), (2, 3, 6, 0), (2, 3, 0, 0), (0, 3, 0, 4)]:
            with pytest.raises(ValueError, match=r"x must have non-zero H and W"):
                layer(torch.randn(*shape))


# ---- zero parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_zero_cayley_weight_is_the_channel_identity(case):
    c_in, c_out, k, s, H, W = case
    expected = channel_identity_operator(c_in, c_out, s, H, W)
    layer = cs.nn.CayleyConv2d(c_in, c_out, k, stride=s, bias=False).double()
    with torch.no_grad():
        layer.weight.zero_()
    assert rel_err(dense(layer, c_in, H, W), expected) < 1e-14
    # a zero alpha with a non-zero weight: the same map
    layer = cs.nn.CayleyConv2d(c_in, c_out, k, stride=s, bias=False).double()
    with torch.no_grad():
        layer.alpha.zero_()
    assert rel_err(dense(layer, c_in, H, W), expected) < 1e-14


@pytest.mark.parametrize("dtype,scale", [(torch.float64, 1e-200), (torch.float32, 1e-22), (torch.float32, 1e20)])
def test_cayley_weight_is_normalised_at_any_scale(dtype, scale):
    """Only the weight's direction matters: a weight whose squares under- or
    overflow gives the same layer as the same weight at scale 1."""
    torch.manual_seed(0)
    layer = cs.nn.CayleyConv2d(3, 4, 3, bias=False).double()
    expected = dense(layer, 3, 5, 5)
    layer.to(dtype)
    with torch.no_grad():
        layer.weight.mul_(scale)  # normalised in dtype, applied to the float64 basis
    T = dense(layer, 3, 5, 5)
    assert torch.isfinite(T).all()
    assert rel_err(T, expected) < (1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_cayley_weight_has_finite_gradients_and_training_leaves_it(dtype):
    torch.manual_seed(0)
    layer = cs.nn.CayleyConv2d(3, 3, 3).to(dtype)
    with torch.no_grad():
        layer.weight.zero_()
    x = torch.randn(2, 3, 6, 6, dtype=dtype)
    target = torch.randn(2, 3, 6, 6, dtype=dtype)
    loss = ((layer(x) - target) ** 2).mean()
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in layer.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert layer.weight.grad.abs().max() > 0  # not a stationary point: a step moves it
    with torch.no_grad():
        for p in layer.parameters():
            p.sub_(0.1 * p.grad)
    assert layer.weight.abs().max() > 0
    sv = torch.linalg.svdvals(dense(layer.double(), 3, 6, 6) - dense_bias(layer, 3, 6, 6))
    assert (sv - 1).abs().max() < 1e-10


def identity_matrices_where_zero(matrices: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype)
    return torch.stack([eye if bool((m == 0).all()) else m for m in matrices])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_zero_bcop_matrices_give_an_orthogonal_layer(case):
    c_in, c_out, k, s, H, W = case
    layer = cs.nn.BCOPConv2d(c_in, c_out, k, stride=s, bias=False).double()
    with torch.no_grad():
        layer.matrices.zero_()
    sv = torch.linalg.svdvals(dense(layer, c_in, H, W))
    assert (sv - 1).abs().max() < 1e-10  # not the zero map
    eye = identity_matrices_where_zero(layer.matrices)
    ref = cs.reference.bcop_kernel(eye, c_out, c_in * s * s, iters=layer.bjorck_iters)
    assert rel_err(layer.weight, ref) < 1e-14


def test_a_zero_bcop_matrix_is_the_identity_with_its_gradient():
    torch.manual_seed(0)
    matrices = torch.randn(5, 4, 4, dtype=torch.float64)
    matrices[0] = 0
    matrices[3] = 0
    zeroed = matrices.clone().requires_grad_()
    replaced = identity_matrices_where_zero(matrices).requires_grad_()
    probe = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    k_zero = cs.nn.bcop_kernel(zeroed, 4, 4, iters=8)
    k_eye = cs.nn.bcop_kernel(replaced, 4, 4, iters=8)
    assert rel_err(k_zero, cs.reference.bcop_kernel(replaced.detach(), 4, 4, iters=8)) < 1e-13
    (k_zero * probe).sum().backward()
    (k_eye * probe).sum().backward()
    assert torch.isfinite(zeroed.grad).all()
    assert rel_err(zeroed.grad, replaced.grad) < 1e-14


def test_rank_deficient_bcop_matrices_warn_when_the_eval_cache_is_built():
    layer = cs.nn.BCOPConv2d(4, 4, 3, bias=False).double()
    with torch.no_grad():
        layer.matrices[0, 1] = 0  # the channel matrix loses a rank
    layer.eval()
    with pytest.warns(RuntimeWarning, match="rank-deficient.*not orthogonal"):
        T = dense(layer, 4, 5, 5)
    # the warning is true: the dense operator has a singular value far from 1
    assert torch.linalg.svdvals(T).min() < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dense(layer, 4, 5, 5)  # cached: checked once per parameter change
        layer.train()
        dense(layer, 4, 5, 5)  # training mode is not checked


@pytest.mark.parametrize("layer_class", LAYERS, ids=LAYER_IDS)
def test_orthogonal_layers_do_not_warn_in_eval(layer_class):
    layer = layer_class(4, 6, 3, bias=False).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sv = torch.linalg.svdvals(dense(layer, 4, 5, 5))
    assert (sv - 1).abs().max() < 1e-8


# ---- arguments ----------------------------------------------------------------------------------


def test_bjorck_iters_is_validated_at_construction():
    cap = cs.linalg.MAX_BJORCK_ITERS
    assert cs.nn.BCOPConv2d(3, 4, 3, bjorck_iters=cap).bjorck_iters == cap
    with pytest.raises(ValueError, match=rf"bjorck_iters must be <= {cap}, got 5000"):
        cs.nn.BCOPConv2d(3, 4, 3, bjorck_iters=5000)
    with pytest.raises(ValueError, match="bjorck_iters must be >= 1"):
        cs.nn.BCOPConv2d(3, 4, 3, bjorck_iters=0)
    for bad in (2.0, True, "20", None):
        with pytest.raises(TypeError, match="bjorck_iters must be an int"):
            cs.nn.BCOPConv2d(3, 4, 3, bjorck_iters=bad)


@pytest.mark.parametrize("layer_class", LAYERS, ids=LAYER_IDS)
def test_constructor_errors_name_their_argument(layer_class):
    for bad in (1, 0, None, "yes", torch.tensor(True)):
        with pytest.raises(TypeError, match="bias must be a bool"):
            layer_class(3, 4, 3, bias=bad)
    assert layer_class(3, 4, 3, bias=False).bias is None
    with pytest.raises(ValueError, match="stride must be >= 1"):
        layer_class(3, 4, 3, stride=0)
    with pytest.raises(TypeError, match="stride must be an int"):
        layer_class(3, 4, 3, stride=1.5)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        layer_class(3, 4, 0)
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        layer_class(3, 4, (3, 3))
    with pytest.raises(TypeError, match="in_channels must be an int"):
        layer_class(3.0, 4, 3)
    with pytest.raises(TypeError, match="out_channels must be an int"):
        layer_class(3, True, 3)


@pytest.mark.parametrize("k,s", [(1, 2), (2, 3), (1, 3), (5, 2)])
@pytest.mark.parametrize("layer_class", LAYERS, ids=LAYER_IDS)
def test_kernels_smaller_or_larger_than_the_stride_are_orthogonal(layer_class, k, s):
    layer = layer_class(1, 3, k, stride=s, bias=False).double()
    sv = torch.linalg.svdvals(dense(layer, 1, 2 * s, s))
    assert (sv - 1).abs().max() < 1e-8


def test_bcop_kernel_validates_iters():
    matrices = torch.randn(3, 4, 4)
    cap = cs.linalg.MAX_BJORCK_ITERS
    with pytest.raises(ValueError, match=rf"iters must be <= {cap}, got 5000"):
        cs.nn.bcop_kernel(matrices, 4, 4, iters=5000)
    with pytest.raises(ValueError, match="iters must be >= 0"):
        cs.nn.bcop_kernel(matrices, 4, 4, iters=-1)
    for bad in (2.5, False, None):
        with pytest.raises(TypeError, match="iters must be an int"):
            cs.nn.bcop_kernel(matrices, 4, 4, iters=bad)
