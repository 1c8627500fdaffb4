"""Layers and regularisers built on the spectra: orthogonal convolutions
(layers.py), an orthogonal linear layer (linear.py), sorting activations
(activations.py), the residual wrapper (residual.py), certified-training
losses (losses.py), the spectral penalty of a model's conv layers
(penalty.py) and export to plain torch modules (export.py)."""

from __future__ import annotations

from .activations import GroupSort, MaxMin
from .export import export
from .layers import BCOPConv2d, CayleyConv2d, bcop_kernel, circular_conv2d
from .linear import OrthogonalLinear
from .losses import MarginHingeLoss, OffsetCrossEntropy
from .penalty import conv_input_sizes, spectral_penalty
from .residual import Residual

__all__ = ["CayleyConv2d", "BCOPConv2d", "OrthogonalLinear", "MaxMin", "GroupSort", "Residual", "OffsetCrossEntropy",
           "MarginHingeLoss", "bcop_kernel", "circular_conv2d", "spectral_penalty", "conv_input_sizes", "export"]
