"""Spectra of conv layers: the symbol, the exact circular singular values and
per-frequency SVD (circular.py, on the grid machinery of _grid.py), and the
zero-padding approximation (zero_padding.py)."""

from __future__ import annotations

from .circular import conv_svd, singular_values, symbol

__all__ = ["symbol", "singular_values", "conv_svd"]
