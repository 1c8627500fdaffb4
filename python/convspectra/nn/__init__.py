"""Layers and regularisers built on the spectra: orthogonal convolutions
(layers.py) and the spectral penalty of a model's conv layers (penalty.py)."""

from __future__ import annotations

from .layers import BCOPConv2d, CayleyConv2d, bcop_kernel, circular_conv2d
from .penalty import conv_input_sizes, spectral_penalty

__all__ = ["CayleyConv2d", "BCOPConv2d", "bcop_kernel", "circular_conv2d", "spectral_penalty", "conv_input_sizes"]
