"""Certified L2 Lipschitz bounds of whole networks, composed from per-layer
bounds taken at the input size each layer really sees (docs/math.md §14.1),
and the local lower bound that shows how tight they are.

The bound is of the function the model computes in eval mode (dropout off,
batch norm with its running statistics). It is certified up to the floating
point rounding of the norms it is made of: every rule below is an upper bound
by a stated argument, never an estimate, and a module without a rule is an
error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import _checks, linalg
from ._precision import in_full_float32
from .nn.activations import GroupSort, MaxMin
from .nn.aol import AOLConv2d
from .nn.convex_potential import CPLConv2d, SLLConv2d
from .nn.layers import BCOPConv2d, CayleyConv2d, LOTConv2d, fold_kernel
from .nn.linear import OrthogonalLinear
from .nn.penalty import conv_layer_norm, conv_padding, effective_kernel
from .nn.residual import Residual
from .nn.soc import SOCConv2d, series_remainder
from .norms import spectral_norm

__all__ = ["lipschitz_bound", "lipschitz_report", "register_lipschitz", "lipschitz_lower_bound", "LipschitzReport",
           "LipschitzRow"]

# The exact norm of a layer from its dense matrix when that matrix and the identity it is built
# from each have at most this many entries (float64: 32 MiB) and its smaller side is at most
# DENSE_MAX_SIDE (the SVD's cost).
DENSE_MAX_ENTRIES = 2**22
DENSE_MAX_SIDE = 2048


@dataclass
class LipschitzRow:
    """One layer of a report: its path in the model, type, the input shape it
    sees (without the batch), its bound and how that bound was obtained."""

    name: str
    type: str
    input_shape: tuple
    bound: float
    method: str


@dataclass
class LipschitzReport:
    """The per-layer table of ``lipschitz_report`` and the model's bound."""

    rows: list[LipschitzRow] = field(default_factory=list)
    bound: float = float("nan")

    def __str__(self) -> str:
        head = ("layer", "type", "input", "bound", "method")
        body = [(r.name, r.type, "x".join(map(str, r.input_shape)), f"{r.bound:.6g}", r.method) for r in self.rows]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"Lipschitz bound of the model (L2, eval mode): {self.bound:.6g}")
        return "\n".join(lines)


# user rules: module type -> fn(module, input_shape) -> bound
_registered: dict[type, Callable] = {}


def register_lipschitz(module_type: type, fn: Callable) -> None:
    """Teach ``lipschitz_bound`` a module type: ``fn(module, input_shape)``
    returns an upper bound (a float or a 0-dim tensor, differentiable if you
    want the model's bound to be) of the module's L2 Lipschitz constant on
    inputs of shape ``input_shape`` (a tuple without the batch dimension). It
    applies to subclasses too and takes precedence over the built-in rules."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module, got {module_type!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    _registered[module_type] = fn


@in_full_float32
def lipschitz_bound(model: nn.Module, input_size=None, in_channels: int | None = None, *,
                    verify: bool = True) -> torch.Tensor:
    """A certified upper bound of the L2 Lipschitz constant of ``model`` (in
    eval mode) on inputs of spatial size ``input_size`` (an int or (H, W);
    ``None`` for a model whose first layer is linear and takes flat
    features), with ``in_channels`` from the first layer unless given: a
    0-dim tensor, differentiable in the parameters where the parts are.

    ``nn.Sequential`` multiplies its layers' bounds, ``cs.nn.Residual(f,
    scale)`` gives ``1 + |scale| L(f)``; the layer rules are in
    docs/math.md §14.1 and ``lipschitz_report`` shows which one each layer got.
    With ``verify=True`` the orthogonal convspectra layers are measured at
    their input size (their exact norm, about 1), not assumed to be 1.
    Unsupported modules raise TypeError naming the type; teach them with
    ``cs.register_lipschitz``.
    """
    return _walk(model, input_size, in_channels, verify)[0]


@in_full_float32
def lipschitz_report(model: nn.Module, input_size=None, in_channels: int | None = None, *,
                     verify: bool = True) -> LipschitzReport:
    """The per-layer table behind ``lipschitz_bound`` (name, type, input
    shape, bound, method) and the model's bound; ``str()`` of it is the table
    that ``convspectra lipschitz`` prints."""
    with torch.no_grad():
        bound, rows = _walk(model, input_size, in_channels, verify)
    return LipschitzReport(rows, float(bound))


def _walk(model, input_size, in_channels, verify):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    verify = _checks.check_bool(verify, "verify")
    shape = _input_shape(model, input_size, in_channels)
    p = next(model.parameters(), None)
    like = p if p is not None else torch.zeros(())
    walker = _Walker(verify, like.dtype if like.is_floating_point() else torch.float32, like.device)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        bound, _ = walker.bound(model, shape, "")
    finally:
        for m, mode in modes.items():
            m.training = mode
    return bound, walker.rows


def _first_layer(model: nn.Module):
    for m in model.modules():
        if hasattr(m, "in_channels") or hasattr(m, "in_features"):
            return m
    return None


def _input_shape(model, input_size, in_channels) -> tuple:
    first = _first_layer(model)
    if input_size is None:
        if first is not None and hasattr(first, "in_features") and in_channels is None:
            return (int(first.in_features),)
        raise ValueError("input_size is required unless the model's first layer is linear (flat inputs)")
    H, W = _checks.input_size_pair(input_size, torch.empty(1, 1, 1, 1))
    if in_channels is None:
        if first is None or not hasattr(first, "in_channels"):
            raise ValueError("in_channels is required: the model's first layer does not say how many channels "
                             "its input has")
        in_channels = first.in_channels
    return (_checks.positive_int(in_channels, "in_channels"), H, W)


def _overrides_forward(module: nn.Module, base: type) -> bool:
    return type(module).forward is not base.forward


class _Walker:
    """Walks a module tree with the input shape each part sees, collecting
    one row per layer."""

    def __init__(self, verify: bool, dtype, device):
        self.verify, self.dtype, self.device = verify, dtype, device
        self.rows: list[LipschitzRow] = []

    def out_shape(self, module, shape, name) -> tuple:
        x = torch.zeros(1, *shape, dtype=self.dtype, device=self.device)
        try:
            with torch.no_grad():
                y = module(x)
        except Exception as e:
            raise ValueError(f"lipschitz_bound: layer {name or 'model'} ({type(module).__name__}) cannot take an "
                             f"input of shape {shape}: {e}") from e
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"lipschitz_bound: layer {name or 'model'} ({type(module).__name__}) returns a "
                            f"{type(y).__name__}, not a tensor")
        return tuple(y.shape[1:])

    def bound(self, module, shape, name) -> tuple[torch.Tensor, tuple]:
        """(bound, output shape) of module on inputs of shape ``shape``."""
        rule = _lookup(_registered, module)
        if rule is not None:
            out = self.out_shape(module, shape, name)
            b = rule(module, shape)
            self.add(name, module, shape, b, "registered rule")
            return self.tensor(b), out
        if isinstance(module, nn.Sequential) and not _overrides_forward(module, nn.Sequential):
            total = self.tensor(1.0)
            for child_name, child in module.named_children():
                b, shape = self.bound(child, shape, f"{name}.{child_name}" if name else child_name)
                total = total * b
            return total, shape
        if isinstance(module, Residual) and not _overrides_forward(module, Residual):
            start = len(self.rows)
            inner, out = self.bound(module.f, shape, f"{name}.f" if name else "f")
            if out != shape:
                raise ValueError(f"lipschitz_bound: the branch of Residual {name or 'model'} maps {shape} to {out}")
            b = 1 + abs(module.scale) * inner
            self.rows.insert(start, LipschitzRow(name or "model", "Residual", shape, float(b.detach()),
                                                 f"1 + {abs(module.scale):g} L(f)"))
            return b, shape
        rule = _builtin_rule(module)
        if rule is None:
            raise TypeError(f"lipschitz_bound: no Lipschitz rule for layer {name or 'model'} of type "
                            f"{type(module).__module__}.{type(module).__qualname__}; register one with "
                            f"cs.register_lipschitz({type(module).__name__}, fn) (fn(module, input_shape) -> bound), "
                            "or build the model from nn.Sequential and cs.nn.Residual")
        out = self.out_shape(module, shape, name)
        b, method = rule(self, module, shape, out)
        self.add(name, module, shape, b, method)
        return self.tensor(b), out

    def tensor(self, b) -> torch.Tensor:
        """b as a 0-dim tensor of the model's dtype, rounded up where that dtype
        is narrower: a bound must stay a bound (the gradient passes through)."""
        if not isinstance(b, torch.Tensor):
            b = torch.tensor(float(b), dtype=torch.float64, device=self.device)
        b = b.reshape(())
        t = b.to(self.dtype)
        if torch.finfo(t.dtype).eps > torch.finfo(b.dtype).eps:
            below = (t.detach().to(b.dtype) < b.detach()).to(t.dtype)
            t = t + below * (torch.nextafter(t.detach(), torch.full_like(t.detach(), math.inf)) - t.detach())
        return t

    def add(self, name, module, shape, b, method):
        value = float(b.detach()) if isinstance(b, torch.Tensor) else float(b)
        if not value >= 0:  # NaN or negative: not a bound
            raise ValueError(f"lipschitz_bound: the bound of layer {name or 'model'} ({type(module).__name__}) "
                             f"is {value}, not a non-negative number")
        self.rows.append(LipschitzRow(name or "model", type(module).__name__, tuple(shape), value, method))


def _lookup(table: dict, module):
    for base in type(module).__mro__:
        if base in table:
            return table[base]
    return None


def _builtin_rule(module):
    """The built-in rule of the nearest base class that has one, if the module
    does not override that class's forward (a changed forward is another map)."""
    for base in type(module).__mro__:
        if base in _RULES:
            return None if _overrides_forward(module, base) else _RULES[base]
    return None


# ---- layer rules: (walker, module, input shape, output shape) -> (bound, method) ----

def _constant(value: float, method: str):
    return lambda walker, m, shape, out: (value, method)


def _spatial(module, shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"lipschitz_bound: {what} needs (channels, H, W) inputs, got shape {shape}")
    return shape


def _dense_norm(fn, shape, out, dtype) -> torch.Tensor | None:
    """The exact norm of the linear map fn from its dense matrix, in float64,
    or None when that matrix is too large."""
    n_in, n_out = math.prod(shape), math.prod(out)
    if n_in * max(n_in, n_out) > DENSE_MAX_ENTRIES or min(n_in, n_out) > DENSE_MAX_SIDE:
        return None
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape)
    matrix = fn(eye).reshape(n_in, n_out)  # row i: the image of basis vector i (the transposed matrix)
    return linalg.svdvals(matrix).amax()  # float64: the walker rounds it up to the model's dtype


def _conv2d(walker, conv: nn.Conv2d, shape, out):
    C, H, W = _spatial(conv, shape, "Conv2d")
    if conv.padding_mode not in ("zeros", "circular"):
        raise ValueError(f"lipschitz_bound: Conv2d with padding_mode={conv.padding_mode!r} is not supported "
                         "(only 'zeros' and 'circular')")
    w = conv.weight
    dense = _dense_norm(lambda x: conv._conv_forward(x.to(w.device), w.double(), None), shape, out, w.dtype)
    if dense is not None:
        return dense, "exact (dense operator)"
    norm = conv_layer_norm(conv, H, W, "certified", {})
    if conv.padding_mode == "zeros":
        how = "certified (circular norm on the full-convolution grid)"
    else:
        kh, kw = effective_kernel(conv, w).shape[-2:]
        same = conv_padding(conv, kh, kw) == ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
        how = "exact circular norm" if same else "circular norm x sqrt(output repeats) (upper bound)"
    if conv.stride != (1, 1):
        how += ", of the stride-1 layer"
    if conv.groups > 1:
        how += ", largest group"
    return norm, how


def _linear(walker, lin: nn.Linear, shape, out):
    return linalg.svdvals(lin.weight).amax(), "exact (top singular value)"


def _batch_norm(walker, bn, shape, out):
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError(f"lipschitz_bound: {type(bn).__name__} without running statistics normalises by batch "
                         "statistics even in eval mode: it is not a fixed map")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    return scale.abs().amax(), "exact (diagonal map)"


def _schur_nonnegative(walker, pool, shape, out):
    """The Schur test for a linear map with nonnegative entries (average
    pooling): ||A||^2 <= max(A 1) max(A^T 1), both from one forward and one
    backward of the all-ones input."""
    _spatial(pool, shape, type(pool).__name__)
    ones = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        rows = pool(ones)
        (cols,) = torch.autograd.grad(rows.sum(), ones)
    return math.sqrt(float(rows.detach().amax()) * float(cols.amax())), "certified (Schur test)"


def _max_pool(walker, pool: nn.MaxPool2d, shape, out):
    """sqrt of the largest number of windows that share an input: each output
    moves by at most the largest change in its window."""
    C, H, W = _spatial(pool, shape, "MaxPool2d")
    pair = nn.modules.utils._pair
    k, s, p, d = pair(pool.kernel_size), pair(pool.stride if pool.stride is not None else pool.kernel_size), \
        pair(pool.padding), pair(pool.dilation)
    Ho, Wo = out[-2:]
    extra = [max(0, (o - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (n + 2 * p[i])) for i, (o, n) in enumerate(((Ho, H), (Wo, W)))]
    ones = nn.functional.pad(torch.ones(1, 1, H, W, dtype=torch.float64), (p[1], p[1] + extra[1], p[0], p[0] + extra[0]))
    cols = nn.functional.unfold(ones, k, dilation=d, stride=s)
    if cols.shape[-1] != Ho * Wo:
        raise ValueError(f"lipschitz_bound: could not lay out the windows of {pool} on a {H}x{W} input")
    counts = nn.functional.fold(cols, ones.shape[-2:], k, dilation=d, stride=s)[0, 0, p[0]:p[0] + H, p[1]:p[1] + W]
    return math.sqrt(float(counts.amax())), "certified (sqrt of the most windows sharing an input)"


def _leaky_relu(walker, m, shape, out):
    return max(1.0, abs(m.negative_slope)), "exact (max |slope|)"


def _prelu(walker, m, shape, out):
    return torch.maximum(m.weight.abs().amax(), torch.ones((), dtype=m.weight.dtype, device=m.weight.device)), \
        "exact (max |slope|)"


def _elu(walker, m, shape, out):
    return max(1.0, abs(m.alpha)), "exact (max |derivative|)"


def _gelu(walker, m, shape, out):
    if m.approximate == "tanh":
        return GELU_TANH_LIPSCHITZ, "max |derivative| (numerical, rounded up)"
    return GELU_LIPSCHITZ, "exact (max |derivative|, at sqrt(2))"


# max over x of |d/dx x Phi(x)| = Phi(sqrt 2) + sqrt(2) phi(sqrt 2)
GELU_LIPSCHITZ = 0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi)
# max |derivative| on a 1e-5 grid of [-12, 12] in float64, rounded up in the 4th decimal:
# gelu(approximate='tanh') 1.128993, silu 1.099839, mish 1.088498
GELU_TANH_LIPSCHITZ = 1.1290
SILU_LIPSCHITZ = 1.0999
MISH_LIPSCHITZ = 1.0886


def _fourier_conv(walker, layer, shape, out):
    C, H, W = _spatial(layer, shape, type(layer).__name__)
    if not walker.verify:
        return 1.0, "1 (orthogonal, assumed: verify=False)"
    Q = layer._frequency_matrices(H // layer.stride, W // layer.stride, walker.dtype)
    return linalg.svdvals(Q).amax(), "exact (per-frequency SVD of the layer's matrices)"


def _aol_conv(walker, layer: AOLConv2d, shape, out):
    """1 by the AOL theorem; with verify, the measured norm of the rescaled
    kernel when it is smaller (both are upper bounds)."""
    C, H, W = _spatial(layer, shape, "AOLConv2d")
    if not walker.verify:
        return 1.0, "1 (AOL rescaling theorem)"
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding="same", bias=False,
                     padding_mode=layer.padding_mode)
    del conv.weight
    conv.weight = layer.rescaled_weight()  # the layer's own kernel, differentiable
    norm, method = _conv2d(walker, conv, shape, out)
    return torch.minimum(torch.as_tensor(norm), torch.ones((), dtype=torch.as_tensor(norm).dtype)), \
        f"min(1 by the AOL theorem, {method})"


def _bcop_conv(walker, layer: BCOPConv2d, shape, out):
    C, H, W = _spatial(layer, shape, "BCOPConv2d")
    if not walker.verify:
        return 1.0, "1 (orthogonal, assumed: verify=False)"
    h, w = H // layer.stride, W // layer.stride
    return spectral_norm(fold_kernel(layer.weight, h, w), (h, w), "circular", "exact"), "exact circular norm"


def _affine_dense_norm(module, shape, out) -> torch.Tensor | None:
    """The exact norm of an affine layer from its dense matrix (its images of
    the basis minus its image of 0), or None when that matrix is too large."""
    p = next(module.parameters())

    def linear_part(x):
        x = x.to(p.device)
        return module(x) - module(torch.zeros_like(x[:1]))

    return _dense_norm(linear_part, shape, out, p.dtype)


def _soc_conv(walker, layer: SOCConv2d, shape, out):
    """The truncated exponential of a skew operator of norm l: at most
    1 + sum_{i > terms} l^i / i!, l by a certified bound; with verify and a
    small layer, also its exact norm (the smaller of the two)."""
    C, H, W = _spatial(layer, shape, "SOCConv2d")
    L = layer.skew_weight()
    k = L.shape[-1]
    h, w = H // layer.stride, W // layer.stride
    ell = spectral_norm(L, (max(h, k), max(w, k)), "zeros", "certified")
    bound = 1 + series_remainder(ell, layer.eval_terms)  # float64: rounded up by the walker
    method = f"1 + series remainder after {layer.eval_terms} terms (certified ||L|| = {float(ell.detach()):.3g})"
    if walker.verify:
        dense = _affine_dense_norm(layer, shape, out)
        if dense is not None and float(dense.detach()) < float(bound.detach()):
            return dense, "exact (dense operator)"
    return bound, method


def _orthogonal_linear(walker, layer: OrthogonalLinear, shape, out):
    if not walker.verify:
        return 1.0, "1 (orthogonal, assumed: verify=False)"
    return linalg.svdvals(layer.orthogonal_weight()).amax(), "exact (top singular value)"


_ONE = "exact (identity or permutation)"
_RULES: dict[type, Callable] = {
    nn.Conv2d: _conv2d,
    nn.Linear: _linear,
    nn.Flatten: _constant(1.0, _ONE),
    nn.Unflatten: _constant(1.0, _ONE),
    nn.Identity: _constant(1.0, _ONE),
    nn.Dropout: _constant(1.0, "identity in eval mode"),
    nn.Dropout2d: _constant(1.0, "identity in eval mode"),
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.AvgPool2d: _schur_nonnegative,
    nn.AdaptiveAvgPool2d: _schur_nonnegative,
    nn.MaxPool2d: _max_pool,
    nn.PixelShuffle: _constant(1.0, _ONE),
    nn.PixelUnshuffle: _constant(1.0, _ONE),
    nn.ReLU: _constant(1.0, "exact"),
    nn.ReLU6: _constant(1.0, "exact"),
    nn.Hardtanh: _constant(1.0, "exact"),
    nn.Tanh: _constant(1.0, "exact"),
    nn.Softplus: _constant(1.0, "exact"),
    nn.Sigmoid: _constant(0.25, "exact"),
    nn.LeakyReLU: _leaky_relu,
    nn.PReLU: _prelu,
    nn.ELU: _elu,
    nn.GELU: _gelu,
    nn.SiLU: _constant(SILU_LIPSCHITZ, "max |derivative| (numerical, rounded up)"),
    nn.Mish: _constant(MISH_LIPSCHITZ, "max |derivative| (numerical, rounded up)"),
    MaxMin: _constant(1.0, "exact (sorts pairs)"),
    GroupSort: _constant(1.0, "exact (sorts groups)"),
    CayleyConv2d: _fourier_conv,
    LOTConv2d: _fourier_conv,
    AOLConv2d: _aol_conv,
    CPLConv2d: _constant(1.0, "1 (convex potential step <= 2 / h^2, h a certified bound of ||W||)"),
    SLLConv2d: _constant(1.0, "1 (convex potential step, T >= W^T W by the Schur test)"),
    BCOPConv2d: _bcop_conv,
    OrthogonalLinear: _orthogonal_linear,
    SOCConv2d: _soc_conv,
}


@in_full_float32
def lipschitz_lower_bound(model: nn.Module, x: torch.Tensor, iters: int = 50, *, seed: int = 0) -> torch.Tensor:
    """A lower bound of the Lipschitz constant of ``model`` (eval mode): the
    largest spectral norm of the Jacobian found at the points ``x`` (a
    batch), by ``iters`` power iterations on ``J^T J`` per sample with
    ``torch.func.jvp`` and ``torch.func.vjp``. Each value is ``||J v||`` for a
    unit ``v``, so it never exceeds the true constant. Samples must not
    interact in eval mode (as with batch norm's running statistics)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _checks.check_tensor(x, "x")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (batch, ...), got shape {tuple(x.shape)}")
    iters = _checks.int_in_range(iters, "iters", 1, MAX_LOWER_BOUND_ITERS)
    x = x.detach()
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)

    def unit(t):
        return t / torch.linalg.vector_norm(t.flatten(1), dim=1).clamp_min(1e-30).view(-1, *[1] * (t.dim() - 1))

    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        v = unit(v)
        _, pullback = torch.func.vjp(model, x)
        for _ in range(iters):
            _, u = torch.func.jvp(model, (x,), (v,))
            (v,) = pullback(u)
            v = unit(v)
        _, u = torch.func.jvp(model, (x,), (v,))
    finally:
        for m, mode in modes.items():
            m.training = mode
    return torch.linalg.vector_norm(u.flatten(1), dim=1).amax().detach()


MAX_LOWER_BOUND_ITERS = 10_000
