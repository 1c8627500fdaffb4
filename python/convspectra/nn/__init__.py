"""Layers and regularisers built on the spectra: orthogonal convolutions
(layers.py: Cayley, LOT, BCOP), almost-orthogonal convolutions (aol.py),
residual convex-potential layers (convex_potential.py: CPL, SLL), an
orthogonal linear layer (linear.py), sorting activations
(activations.py), the residual wrapper (residual.py), certified-training
losses (losses.py), the spectral penalty of a model's conv layers
(penalty.py) and export to plain torch modules (export.py)."""

from __future__ import annotations

from .activations import GroupSort, MaxMin
from .aol import AOLConv2d, aol_rescale
from .convex_potential import CPLConv2d, SLLConv2d
from .export import export
from .layers import BCOPConv2d, CayleyConv2d, LOTConv2d, bcop_kernel, circular_conv2d
from .linear import OrthogonalLinear
from .losses import MarginHingeLoss, OffsetCrossEntropy
from .penalty import conv_input_sizes, spectral_penalty
from .residual import Residual
from .soc import SOCConv2d

__all__ = ["CayleyConv2d", "BCOPConv2d", "LOTConv2d", "SOCConv2d", "AOLConv2d", "CPLConv2d", "SLLConv2d", "aol_rescale",
           "OrthogonalLinear", "MaxMin", "GroupSort", "Residual", "OffsetCrossEntropy",
           "MarginHingeLoss", "bcop_kernel", "circular_conv2d", "spectral_penalty", "conv_input_sizes", "export"]
