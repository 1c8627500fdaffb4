"""A copy of a model with every convspectra module replaced by plain torch
modules computing the same function at one input size, so that it runs,
pickles and ``torch.export``s where convspectra is not installed."""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn

from .._precision import in_full_float32
from ._same_conv import same_pads
from .activations import GroupSort, MaxMin
from .aol import AOLConv2d
from .convex_potential import CPLConv2d, SLLConv2d
from .layers import BCOPConv2d, CayleyConv2d, LOTConv2d, bcop_kernel, fold_kernel
from .linear import OrthogonalLinear
from .penalty import record_input_shapes
from .residual import Residual
from .soc import SOCConv2d

__all__ = ["export"]

_TYPES = (CayleyConv2d, LOTConv2d, SOCConv2d, BCOPConv2d, AOLConv2d, CPLConv2d, SLLConv2d, OrthogonalLinear, MaxMin, GroupSort,
          Residual)


@in_full_float32
def export(model: nn.Module, input_size=None, in_channels: int | None = None) -> nn.Module:
    """A copy of ``model`` for inputs of spatial size ``input_size`` (an int or
    (H, W); ``None`` for flat inputs) with ``in_channels`` from the first
    layer unless given, in which

    - ``CayleyConv2d`` and ``LOTConv2d`` become [``PixelUnshuffle``] +
      ``CircularPad2d`` + ``Conv2d`` with their effective kernel (the inverse
      FFT of their frequency matrices, one tap per pixel of the input the
      layer sees: exact, and slower than the FFT for large inputs);
    - ``SOCConv2d`` becomes a GraphModule of its eval-mode series;
    - ``AOLConv2d`` becomes a padding module + ``Conv2d`` with the rescaled
      kernel; ``CPLConv2d`` and ``SLLConv2d`` become GraphModules with their
      normalisation fixed at that input size;
    - ``BCOPConv2d`` becomes [``PixelUnshuffle``] + ``CircularPad2d`` +
      ``Conv2d`` with the built kernel;
    - ``OrthogonalLinear`` becomes ``nn.Linear`` with the orthogonal matrix;
    - ``MaxMin``, ``GroupSort`` and ``Residual`` become ``torch.fx``
      GraphModules of plain torch operations.

    Parameters are copied as they are (the built kernels in float64, cast to
    the layer's dtype), so outputs agree to floating-point rounding at that
    input size; another input size needs another export (a Cayley kernel is as
    large as its input). The copy keeps the model's train / eval flags."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from ..lipschitz import _input_shape  # the same rule for the input's channels

    shape = _input_shape(model, input_size, in_channels)
    out = copy.deepcopy(model)
    shapes = _input_shapes(out, shape)
    modes = {id(m): m.training for m in out.modules()}
    out.eval()  # the plain layers take the eval-mode function (SOC's series and rescaling)
    with torch.no_grad():
        exported = _replace(out, shapes, "", modes)
    return exported


def _input_shapes(model: nn.Module, shape) -> dict[int, tuple]:
    """{id(module): input shape without batch} of every convspectra module in
    one eval forward of a zero input."""
    targets = [m for m in model.modules() if isinstance(m, _TYPES)]
    p = next(model.parameters(), None)
    x = torch.zeros(1, *shape, dtype=p.dtype if p is not None else torch.float32,
                    device=p.device if p is not None else None)
    seen = record_input_shapes(model, targets, x)
    for m in targets:
        if len(seen.get(id(m), [])) > 1:
            raise ValueError(f"export: {type(m).__name__} runs on inputs of shapes {seen[id(m)][0]} and "
                             f"{seen[id(m)][1]}; a module used at two sizes cannot be exported to one plain layer")
    return {key: shapes[0] for key, shapes in seen.items()}


def _replace(module: nn.Module, shapes, name, modes) -> nn.Module:
    for child_name, child in list(module.named_children()):
        module._modules[child_name] = _replace(child, shapes, f"{name}.{child_name}" if name else child_name, modes)
    if not isinstance(module, _TYPES):
        module.training = modes.get(id(module), module.training)
        return module
    if id(module) not in shapes:
        raise ValueError(f"export: layer {name or 'model'} ({type(module).__name__}) did not run in the forward "
                         "pass, so its input size is unknown")
    plain = _PLAIN[type(module)](module, shapes[id(module)])
    plain.train(modes[id(module)])
    return plain


def _circular_conv(layer, kernel: torch.Tensor, pads) -> nn.Sequential:
    """[PixelUnshuffle] + CircularPad2d(pads) + Conv2d(kernel) + the layer's bias."""
    c_out, c_in, kh, kw = kernel.shape
    dtype = next(layer.parameters()).dtype
    conv = nn.Conv2d(c_in, c_out, (kh, kw), bias=layer.bias is not None, dtype=dtype, device=kernel.device)
    conv.weight.copy_(kernel)
    if layer.bias is not None:
        conv.bias.copy_(layer.bias)
    parts = [nn.PixelUnshuffle(layer.stride)] if layer.stride > 1 else []
    return nn.Sequential(*parts, nn.CircularPad2d(pads), conv)


def _export_fourier(layer, shape) -> nn.Module:
    h, w = shape[1] // layer.stride, shape[2] // layer.stride
    Q = layer._frequency_matrices(h, w, torch.float64)  # (h, w//2+1, out, in)
    # y = irfft2(Q X) is the circular convolution with k = irfft2(Q); conv2d correlates
    # over the circularly padded input, so tap j (left pad pl) is k at offset pl - j
    k = torch.fft.irfft2(Q.permute(2, 3, 0, 1), s=(h, w))
    top, left = (h - 1) // 2, (w - 1) // 2
    rows = (top - torch.arange(h, device=k.device)) % h
    cols = (left - torch.arange(w, device=k.device)) % w
    kernel = k[:, :, rows][:, :, :, cols]
    return _circular_conv(layer, kernel, (left, w - 1 - left, top, h - 1 - top))


def _export_bcop(layer: BCOPConv2d, shape) -> nn.Module:
    h, w = shape[1] // layer.stride, shape[2] // layer.stride
    weight = bcop_kernel(layer.matrices.double(), layer.out_channels, layer._unshuffled[0], layer.bjorck_iters)
    kh, kw = weight.shape[-2:]

    def pads(k, n):  # as circular_conv2d: a folded axis' tap j acts at offset j
        return (0, n - 1) if k > n else (k // 2, (k - 1) // 2)

    return _circular_conv(layer, fold_kernel(weight, h, w), pads(kw, w) + pads(kh, h))


def _export_linear(layer: OrthogonalLinear, shape) -> nn.Module:
    Q = layer.orthogonal_weight()
    lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=Q.dtype,
                    device=Q.device)
    lin.weight.copy_(Q)
    if layer.bias is not None:
        lin.bias.copy_(layer.bias)
    return lin


def _export_aol(layer: AOLConv2d, shape) -> nn.Module:
    kernel = layer.rescaled_weight()
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, bias=layer.bias is not None,
                     dtype=kernel.dtype, device=kernel.device)
    conv.weight.copy_(kernel)
    if layer.bias is not None:
        conv.bias.copy_(layer.bias)
    pads = same_pads(layer.kernel_size, layer.kernel_size)
    pad = nn.ZeroPad2d(pads) if layer.padding_mode == "zeros" else nn.CircularPad2d(pads)
    return nn.Sequential(pad, conv)


class _PlainConvexPotential(nn.Module):
    """x - W (scale * relu(W^T x + b)) in torch.nn.functional calls, for fx."""

    def __init__(self, layer, scale: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.register_buffer("scale", scale.detach().clone())
        kh, kw = layer.weight.shape[-2:]
        self.pads = same_pads(kh, kw)
        left, right, top, bottom = self.pads
        self.adjoint_pads = (right, left, bottom, top)
        self.mode = "constant" if layer.padding_mode == "zeros" else "circular"

    def forward(self, x):
        F = nn.functional
        z = torch.relu(F.conv2d(F.pad(x, self.pads, mode=self.mode), self.weight, self.bias))
        back = F.conv2d(F.pad(self.scale * z, self.adjoint_pads, mode=self.mode),
                        self.weight.transpose(0, 1).flip(2, 3))
        return x - back


def _export_cpl(layer: CPLConv2d, shape) -> nn.Module:
    return _traced(_PlainConvexPotential(layer, layer.step_size(shape[1], shape[2])))


def _export_sll(layer: SLLConv2d, shape) -> nn.Module:
    return _traced(_PlainConvexPotential(layer, 2 * layer.inverse_t()[:, None, None]))


class _PlainSOC(nn.Module):
    """The truncated exponential series with its kernel fixed, for fx."""

    def __init__(self, layer: SOCConv2d):
        super().__init__()
        self.L = nn.Parameter(layer.skew_weight().detach().clone())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.stride, self.out_channels, self.terms = layer.stride, layer.out_channels, layer.eval_terms
        self.extra = self.L.shape[0] - layer.in_channels * layer.stride**2

    def forward(self, x):
        F = nn.functional
        if self.stride > 1:
            x = F.pixel_unshuffle(x, self.stride)
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        term, total = x, x
        for i in range(1, self.terms + 1):
            term = F.conv2d(term, self.L, padding=self.L.shape[-1] // 2) / i
            total = total + term
        y = total[:, : self.out_channels]
        return y if self.bias is None else y + self.bias[:, None, None]


class _PlainMaxMin(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class _PlainGroupSort(nn.Module):
    def __init__(self, grouped_shape, shape):
        super().__init__()
        self.grouped_shape, self.shape = grouped_shape, shape

    def forward(self, x):
        return x.reshape(self.grouped_shape).sort(dim=2, descending=True).values.reshape(self.shape)


class _PlainResidual(nn.Module):
    def __init__(self, f, scale):
        super().__init__()
        self.f, self.scale = f, scale

    def forward(self, x):
        return x + self.scale * self.f(x)


def _traced(module: nn.Module) -> torch.fx.GraphModule:
    # a GraphModule pickles as its generated code: no reference to this module's classes
    return torch.fx.symbolic_trace(module)


def _export_groupsort(layer: GroupSort, shape) -> nn.Module:
    c, g = shape[0], layer.group_size  # the recorded forward has checked that g divides c
    return _traced(_PlainGroupSort((-1, c // g, g, *shape[1:]), (-1, *shape)))


_PLAIN = {
    CayleyConv2d: _export_fourier,
    LOTConv2d: _export_fourier,
    AOLConv2d: _export_aol,
    SOCConv2d: lambda layer, shape: _traced(_PlainSOC(layer)),
    CPLConv2d: _export_cpl,
    SLLConv2d: _export_sll,
    BCOPConv2d: _export_bcop,
    OrthogonalLinear: _export_linear,
    MaxMin: lambda layer, shape: _traced(_PlainMaxMin()),
    GroupSort: _export_groupsort,
    Residual: lambda layer, shape: _traced(_PlainResidual(layer.f, layer.scale)),
}
