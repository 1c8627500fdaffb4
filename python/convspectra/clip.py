"""Projection of a circular conv layer onto a spectral-norm ball (Sedghi et
al. 2019, docs/math.md §13)."""

from __future__ import annotations

import torch

from . import _autograd, _checks, linalg
from ._gradients import scale_columns
from ._precision import in_full_float32
from .norms import spectral_norm
from .spectrum._grid import complex_dtype, dft_angles, grid_symbols

__all__ = ["clip_singular_values"]

@in_full_float32
def clip_singular_values(weight: torch.Tensor, input_size, max_value: float = 1.0, *, return_norms: bool = False):
    """Projects the circular layer onto the spectral-norm ball of radius
    ``max_value`` (Sedghi et al. 2019) and returns a kernel of the input's shape.

    Per frequency ``F = U S V^H`` becomes ``U min(S, max_value) V^H``; the inverse
    DFT, cropped back to the ``kh x kw`` support, is the result. The first step
    is the exact projection of the circular operator; the crop makes the whole
    an approximation. Computed as the kernel plus the cropped inverse DFT of
    what the projection changes, so a kernel already inside the ball comes back
    unchanged, bit for bit.
    With ``return_norms=True`` also returns ``{"before", "projected",
    "after_crop"}``: the circular norms of the input, of the projected
    (full-support) kernel, and of the returned kernel. Not differentiable (a
    projection step, used between optimiser steps): a backward, jvp or
    torch.func transform through the result raises. Chunked over frequencies.
    """
    _checks.check_weight(weight)
    H, W = _checks.input_size_pair(input_size, weight)
    max_value = _checks.positive_float(max_value, "max_value")
    with torch.no_grad():
        w = weight.detach()
        c_out, c_in, kh, kw = w.shape
        rows, col_angles = dft_angles(H, w.device), dft_angles(W, w.device, W // 2 + 1)
        # inverse DFT over v for taps t < kw; columns 0 < v < W/2 stand for v and W - v
        mult = torch.ones(col_angles.numel(), dtype=w.dtype, device=w.device)
        mult[1 : (W - 1) // 2 + 1] = 2
        delta = torch.zeros(c_out, c_in, kh, kw, dtype=complex_dtype(w.dtype), device=w.device)
        before = torch.zeros((), dtype=w.dtype, device=w.device)
        acc = None  # the inverse DFT over u of the change, (kh, (v1 - v0) * c_out * c_in), per column block
        for u0, u1, v0, v1, F, Eu, Ev in grid_symbols(w, rows, col_angles):
            U, S, Vh = linalg.svd(F)
            before = torch.maximum(before, S.max())
            # what the projection changes: exactly zero where no value exceeds max_value
            change = scale_columns(U, S.clamp(max=max_value) - S) @ Vh
            part = Eu.mH @ change.flatten(1)  # inverse DFT over u, taps s < kh
            acc = part if acc is None else acc.add_(part)
            if u1 == rows.numel():  # the column block is complete: its share of the inverse DFT over v
                delta += torch.einsum("svoi,vt->oist", acc.view(kh, v1 - v0, c_out, c_in) * mult[v0:v1, None, None],
                                      Ev.conj())
                acc = None
        norms = {"before": before, "projected": torch.clamp(before, max=max_value)}
        out = w + (delta.real / (H * W)).to(w.dtype)
        if return_norms:
            norms["after_crop"] = spectral_norm(out, (H, W))
    out = _autograd.not_differentiable(out, weight, "convspectra.clip_singular_values")
    return (out, norms) if return_norms else out

