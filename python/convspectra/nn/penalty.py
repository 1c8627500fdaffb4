"""Spectral-norm regularisation of a model's conv layers at the input size each
layer really sees (docs/math.md §12)."""

from __future__ import annotations

import copy
import math
import threading
import weakref

import torch
from torch import nn

from .. import _checks
from .._precision import in_full_float32
from ..norms import NORM_METHODS, check_norm_options, spectral_norm, zero_padded_norm
from .layers import fold_kernel

__all__ = ["spectral_penalty", "conv_input_sizes"]

# module -> {(in_channels, H, W): (ids of its Conv2d layers, {conv id: (H, W)})}, dropped with
# the module. Ids, not the layers: a module that is itself a Conv2d would keep its own key alive;
# and a changed set of layers is recorded anew.
_size_cache = weakref.WeakKeyDictionary()  # nn.Module -> dict


def conv_input_sizes(module: nn.Module, input_size, in_channels: int | None = None) -> dict[nn.Conv2d, tuple[int, int]]:
    """The spatial input size of every ``nn.Conv2d`` in ``module`` for an input
    of spatial size ``input_size``, recorded by one forward pass of a zero
    batch in eval mode (so batch-norm statistics do not move), cached per module
    and size. ``in_channels`` defaults to that of the first layer that has
    one (a convspectra layer or a Conv2d).

    The pass runs on a copy of the module that shares its parameters and
    buffers, so the module itself is never hooked or switched to eval mode: it
    may be training in another thread meanwhile. A module that cannot be
    copied is probed in place, one probe at a time, with hooks that record
    only the probing thread's calls."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return {}
    H, W = _checks.input_size_pair(input_size, torch.empty(1, 1, 1, 1))
    if in_channels is None:
        c_in = _first_in_channels(module)
    else:
        c_in = _checks.positive_int(in_channels, "in_channels")
    key, ids = (c_in, H, W), tuple(id(conv) for conv in convs)
    cached = _size_cache.setdefault(module, {})
    if key not in cached or cached[key][0] != ids:
        p = convs[0].weight
        x = torch.zeros(1, c_in, H, W, dtype=p.dtype, device=p.device)
        try:
            probe = _sharing_copy(module)
        except Exception:  # uncopyable state (locks, open files, ...): probe the module itself
            with _in_place_probe:
                sizes = _record_sizes(module, convs, x)
        else:
            probe_convs = [m for m in probe.modules() if isinstance(m, nn.Conv2d)]
            copied = _record_sizes(probe, probe_convs, x)
            # the copy's layers in the order of the module's own
            sizes = {id(conv): copied[id(twin)] for conv, twin in zip(convs, probe_convs) if id(twin) in copied}
        cached[key] = (ids, sizes)
    sizes = cached[key][1]
    return {conv: sizes[id(conv)] for conv in convs if id(conv) in sizes}  # layers the forward never ran: none


def _first_in_channels(module: nn.Module) -> int:
    """The input channels of the first conv layer in module order: an
    nn.Conv2d or a convspectra layer (a user module's own ``in_channels``
    attribute, such as a ResNet's width counter, is not a layer's)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) or (type(m).__module__.startswith("convspectra.nn.")
                                        and isinstance(getattr(m, "in_channels", None), int)):
            return m.in_channels
    raise ValueError("in_channels: the module has no conv layer to take it from; pass in_channels")


_in_place_probe = threading.Lock()


def _sharing_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameters, buffers and other tensor
    attributes are the module's own (nothing is copied but the structure)."""
    memo = {}
    for m in module.modules():
        for t in [*m.parameters(recurse=False), *m.buffers(recurse=False),
                  *(v for v in vars(m).values() if isinstance(v, torch.Tensor))]:
            memo[id(t)] = t
    return copy.deepcopy(module, memo)


def _record_sizes(module: nn.Module, convs, x: torch.Tensor) -> dict[int, tuple[int, int]]:
    """{id(conv): (H, W)} of the first input each conv sees in one eval-mode
    forward of x, recorded only in the calling thread."""
    return {key: shapes[0][-2:] for key, shapes in record_input_shapes(module, convs, x).items()}


def record_input_shapes(module: nn.Module, targets, x: torch.Tensor) -> dict[int, list[tuple]]:
    """{id(target): the distinct input shapes (without the batch) it sees, in
    order} in one eval-mode forward of x without autograd, recorded only in
    the calling thread; the module's train / eval flags are restored."""
    shapes: dict[int, list[tuple]] = {}
    me = threading.get_ident()

    def record(target, args):  # returns None: a pre-hook's return value would replace the input
        if threading.get_ident() == me:
            seen = shapes.setdefault(id(target), [])
            if tuple(args[0].shape[1:]) not in seen:
                seen.append(tuple(args[0].shape[1:]))

    hooks = [t.register_forward_pre_hook(record) for t in targets]
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return shapes


def effective_kernel(conv: nn.Conv2d, weight: torch.Tensor) -> torch.Tensor:
    """The kernel with its dilation spelt out as zero taps."""
    dh, dw = conv.dilation
    if (dh, dw) == (1, 1):
        return weight
    c_out, c_in, kh, kw = weight.shape
    out = weight.new_zeros(c_out, c_in, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out[:, :, ::dh, ::dw] = weight
    return out


def conv_padding(conv: nn.Conv2d, kh: int, kw: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of conv for its effective (dilated) kernel kh x kw."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":  # as conv2d(padding="same"): the odd one out after
        return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def layer_norm(conv: nn.Conv2d, w: torch.Tensor, H: int, W: int, method: str, norm_kwargs) -> torch.Tensor:
    """A bound (or with method="exact", the value) of the norm of conv's
    stride-1 operator with kernel w (one group, dilation spelt out) on H x W
    inputs, with the layer's own padding amount and mode."""
    kh, kw = w.shape[-2:]
    pads = conv_padding(conv, kh, kw)
    same = pads == ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    if conv.padding_mode == "circular":
        # the same operator on the input's own grid; another padding amount keeps
        # rows of that circulant (fewer outputs) or repeats them (more): the
        # norm grows by at most the square root of the largest repeat count
        rows, cols = H + pads[2] + pads[3] - kh + 1, W + pads[0] + pads[1] - kw + 1
        repeats = 1 if same else math.ceil(rows / H) * math.ceil(cols / W)
        return repeats**0.5 * spectral_norm(fold_kernel(w, H, W), (H, W), "circular", method, **norm_kwargs)
    if method == "exact":  # the true operator, whatever its padding
        tol, max_iter, _ = check_norm_options("exact", "zeros", **norm_kwargs)  # spectral_norm's own checks
        return zero_padded_norm(w, H, W, tol, max_iter, pads)
    # every zero padding amount gives rows of the full convolution (or zero rows): the
    # bounds of the layer on an input as large as the kernel hold for all of them
    return spectral_norm(w, (max(H, kh), max(W, kw)), "zeros", method, **norm_kwargs)


def conv_layer_norm(conv: nn.Conv2d, H: int, W: int, method: str, norm_kwargs) -> torch.Tensor:
    """A bound (or with method="exact", the value for stride 1) of the norm of
    conv on H x W inputs: its padding, dilation and groups as they are, its
    stride by the stride-1 operator (subsampling the output cannot increase
    the norm), its groups by the largest group's norm."""
    if conv.padding_mode not in _checks.PADDINGS:
        raise ValueError(f"layer {conv} has padding_mode={conv.padding_mode!r}; only 'zeros' and 'circular' are "
                         "supported")
    weight = effective_kernel(conv, conv.weight)
    per_group = weight.shape[0] // conv.groups
    norm = None
    for g in range(conv.groups):
        n = layer_norm(conv, weight[g * per_group : (g + 1) * per_group], H, W, method, norm_kwargs)
        norm = n if norm is None else torch.maximum(norm, n)
    return norm


@in_full_float32
def spectral_penalty(
    module: nn.Module,
    input_size,
    method: str = "certified",
    *,
    in_channels: int | None = None,
    target: float | None = None,
    **norm_kwargs,
) -> torch.Tensor:
    """A differentiable bound of the spectral norm of every ``nn.Conv2d`` in
    ``module``, summed: a regulariser to add to a loss.

    The default, ``"certified"``, is a guaranteed upper bound of every layer
    (exact for circular padding) and the fastest one that is tight: on
    ResNet-18's layers it is 1.6x to 2.8x faster than ``"gram"``, which is
    never below it (bench/NOTES.md, "Spectral norms against the field").

    Each layer is bounded at the input size it actually sees (recorded once
    with ``conv_input_sizes``) with ``cs.spectral_norm(method=...)``, its own
    padding mode ('zeros' or 'circular') and padding amount: zero padding of
    any amount is bounded by the bounds of the full convolution, and
    ``method="exact"`` runs Lanczos on the layer's true operator; a circular
    layer whose padding is not 'same' (more or fewer outputs than inputs) by
    the circulant's norm times the square root of how often an output row
    repeats (an upper bound, also for "exact"). A strided layer is bounded by its
    stride-1 norm (subsampling the output cannot increase it); a grouped layer
    by the largest of its groups' norms; dilation is spelt out as zero taps.
    With ``target``, each layer contributes ``relu(norm - target)`` instead,
    penalising only what exceeds it. Extra keyword arguments go to
    ``spectral_norm`` (e.g. ``steps`` for Gram iteration). Its derivatives are
    those of ``spectral_norm``: double backward works except for
    ``method="exact"`` on a zero-padded layer, which raises.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if method not in NORM_METHODS:
        raise ValueError(f"method must be one of {NORM_METHODS}, got {method!r}")
    if target is not None:
        target = _checks.positive_float(target, "target")
    sizes = conv_input_sizes(module, input_size, in_channels)
    total = None
    for conv, (H, W) in sizes.items():
        norm = conv_layer_norm(conv, H, W, method, norm_kwargs)
        term = norm if target is None else torch.relu(norm - target)
        total = term if total is None else total + term
    if total is None:
        p = next(module.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return total

