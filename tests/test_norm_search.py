"""The pruned searches of the maximising frequency (docs/math.md §11.4) against
solving every frequency of the grid: the exact norm's certified search and the
Gram bound's pruned iteration, on structured and random kernels, across blocks."""

import pytest
import torch

import convspectra as cs
from convspectra import _norm_search, linalg, norms
from convspectra.spectrum import _grid
from helpers import DEVICES
from structured import KERNEL_KINDS, structured_kernel

SHAPES = [(6, 6, 3, 9, 9), (4, 7, 3, 8, 5), (7, 3, 2, 6, 7), (5, 5, 1, 4, 4), (3, 3, 5, 12, 10)]
SCALES = [1.0, 1e-30, 1e30]


def full_grid_top(w, H, W):
    return norms.top_singular_value(norms.symbol_at(w, *norms.argmax_frequency(w, H, W, norms.top_singular_value)))


def searched_top(w, H, W):
    return norms.top_singular_value(norms.symbol_at(w, *_norm_search.top_singular_argmax(w, H, W)))


def full_grid_gram(w, H, W, steps):
    per_matrix = lambda A: linalg.gram_bound(A, steps)  # noqa: E731
    return per_matrix(norms.symbol_at(w, *norms.argmax_frequency(w, H, W, per_matrix)))


def searched_gram(w, H, W, steps):
    return linalg.gram_bound(norms.symbol_at(w, *_norm_search.gram_argmax(w, H, W, steps)), steps)


def dense_circular_norm(w, H, W):
    """Every singular value of the whole (not half) grid's symbol by LAPACK, float64."""
    F = torch.fft.fft2(w.double().cpu(), (H, W)).permute(2, 3, 0, 1)
    return torch.linalg.matrix_norm(F, ord=2).amax()


def certified_rtol(w):
    # the search is certified to n eps of the maximum (delta / 2 plus rounding)
    return 4 * min(w.shape[:2]) * torch.finfo(w.dtype).eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("scale", SCALES)
def test_exact_search_on_structured_kernels(kind, scale, dtype):
    for c_out, c_in, k, H, W in SHAPES:
        w = structured_kernel(kind, c_out, c_in, k, dtype=dtype) * scale
        expected = dense_circular_norm(w, H, W)
        got = searched_top(w, H, W).double()
        assert torch.allclose(got, expected, rtol=certified_rtol(w) + 8 * torch.finfo(dtype).eps, atol=0), (
            kind, scale, (c_out, c_in, k, H, W), float(got), float(expected))
        # as large as the full-grid maximum, to the certified slack
        assert got >= full_grid_top(w, H, W).double() * (1 - certified_rtol(w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KERNEL_KINDS)
@pytest.mark.parametrize("steps", [0, 1, 3, 10])
def test_gram_search_equals_the_full_grid(kind, steps, dtype):
    for c_out, c_in, k, H, W in SHAPES:
        w = structured_kernel(kind, c_out, c_in, k, dtype=dtype)
        expected = full_grid_gram(w, H, W, steps)
        got = searched_gram(w, H, W, steps)
        assert torch.allclose(got, expected, rtol=16 * torch.finfo(dtype).eps, atol=0), (
            kind, steps, (c_out, c_in, k, H, W), float(got), float(expected))


@pytest.mark.parametrize("device", DEVICES)
def test_searches_carry_their_bounds_across_blocks(device, monkeypatch):
    # blocks of a few frequencies: the lower bound found in one block prunes the next
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(8, 6, 3, 3, generator=gen, dtype=torch.float64).to(device)
    H, W = 16, 12
    expected_top, expected_gram = dense_circular_norm(w, H, W), full_grid_gram(w, H, W, 4)
    monkeypatch.setattr(_grid, "CHUNK_ELEMENTS", 3 * 8 * 6)
    assert len(list(_grid.grid_symbols(w, _grid.dft_angles(H, device), _grid.dft_angles(W, device, 7)))) > 10
    assert torch.allclose(searched_top(w, H, W).cpu(), expected_top, rtol=1e-12)
    assert torch.allclose(searched_gram(w, H, W, 4), expected_gram, rtol=1e-12)


def test_exact_search_solves_frequencies_it_cannot_certify(monkeypatch):
    # a tie at every frequency (a centre-only kernel has a constant symbol) and a
    # maximum the power steps rank last: the answer must still be the maximum
    solved = []
    top_eigenvalue = _norm_search._top_eigenvalue
    monkeypatch.setattr(_norm_search, "_top_eigenvalue", lambda M: solved.append(M.shape[0]) or top_eigenvalue(M))
    w = structured_kernel("centre_only", 5, 4, 3)
    assert torch.allclose(searched_top(w, 7, 6), dense_circular_norm(w, 7, 6), rtol=1e-12)
    monkeypatch.setattr(_norm_search, "POWER_STEPS", 0)  # candidates ranked by a blind start
    solved.clear()
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(6, 6, 3, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(searched_top(w, 10, 10), dense_circular_norm(w, 10, 10), rtol=1e-12)
    assert sum(solved) < 10 * 6  # fewer than every frequency of the half grid


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["exact", "certified", "gram"])
def test_spectral_norm_uses_the_search_and_keeps_its_gradient(device, method):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    padding = "zeros" if method == "certified" else "circular"
    got = cs.spectral_norm(w, (9, 8), padding, method)
    ref = (cs.reference.spectral_norm(w, (11, 10)) if method == "certified" else
           cs.reference.spectral_norm(w, (9, 8)) if method == "exact" else
           cs.reference.gram_bound(cs.reference.symbol(w, (9, 8))).max())
    assert torch.allclose(got, ref, rtol=1e-10)
    (g,), (g_ref,) = torch.autograd.grad(got, w), torch.autograd.grad(ref, w)
    assert torch.allclose(g, g_ref, rtol=1e-8, atol=1e-10)


def test_non_finite_kernels_keep_the_full_grid_nan():
    w = torch.randn(3, 3, 3, 3)
    w[0, 0, 0, 0] = float("nan")
    for method in ("exact", "gram"):
        assert torch.isnan(cs.spectral_norm(w, 8, method=method))
