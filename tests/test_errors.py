"""Bad input gives a clear TypeError / ValueError naming the argument."""

import pytest
import torch

import convspectra as cs

W = torch.randn(4, 3, 3, 3)


@pytest.mark.parametrize(
    "weight,exc,match",
    [
        ([[1.0]], TypeError, "weight must be a torch.Tensor"),
        (torch.ones(4, 3, 3, 3, dtype=torch.int64), TypeError, "weight must have dtype"),
        (torch.ones(4, 3, 3, 3, dtype=torch.complex64), TypeError, "weight must have dtype"),
        (torch.ones(4, 3, 3), ValueError, r"weight must be 4-D"),
        (torch.ones(1, 4, 3, 3, 3), ValueError, r"weight must be 4-D"),
        (torch.ones(0, 3, 3, 3), ValueError, "weight must be non-empty"),
        (torch.ones(4, 3, 0, 3), ValueError, "weight must be non-empty"),
    ],
)
@pytest.mark.parametrize("fn", [cs.singular_values, cs.symbol, cs.conv_svd, cs.spectral_norm, cs.reference.singular_values])
def test_bad_weight(fn, weight, exc, match):
    with pytest.raises(exc, match=match):
        fn(weight, (8, 8))


@pytest.mark.parametrize(
    "size,exc,match",
    [
        ((0, 8), ValueError, "input_size must be >= 1"),
        ((8, -1), ValueError, "input_size must be >= 1"),
        ((8,), TypeError, "input_size must be an int or a pair"),
        ("8x8", TypeError, "input_size must be an int or a pair"),
        ((8.0, 8), TypeError, "input_size must be an int"),
        ((True, 8), TypeError, "input_size must be an int"),
        ((2, 8), ValueError, r"weight kernel \(3, 3\) is larger than input_size \(2, 8\)"),
        ((8, 2), ValueError, "larger than input_size"),
    ],
)
@pytest.mark.parametrize("fn", [cs.singular_values, cs.symbol, cs.conv_svd, cs.spectral_norm])
def test_bad_input_size(fn, size, exc, match):
    with pytest.raises(exc, match=match):
        fn(W, size)


def test_bad_padding_and_stride():
    with pytest.raises(ValueError, match="padding must be one of"):
        cs.singular_values(W, (8, 8), padding="reflect")
    with pytest.raises(ValueError, match="padding must be one of"):
        cs.spectral_norm(W, (8, 8), padding="same")
    with pytest.raises(ValueError, match="stride must be >= 1"):
        cs.singular_values(W, (8, 8), stride=0)
    with pytest.raises(TypeError, match="stride must be an int"):
        cs.singular_values(W, (8, 8), stride=1.5)
    with pytest.raises(ValueError, match=r"stride 3 must divide input_size \(8, 8\)"):
        cs.singular_values(W, (8, 8), stride=3)
    with pytest.raises(ValueError, match="input_size is required"):
        cs.spectral_norm(W)
    with pytest.raises(ValueError, match="input_size is required"):
        cs.spectral_norm(W, padding="zeros")


@pytest.mark.parametrize(
    "A,exc,match",
    [
        (torch.ones(3), ValueError, "A must have at least 2 dimensions"),
        (torch.tensor(1.0), ValueError, "A must have at least 2 dimensions"),
        (torch.ones(3, 3, dtype=torch.int32), TypeError, "A must have dtype"),
        (torch.ones(3, 3, dtype=torch.float16), TypeError, "A must have dtype"),
        (torch.ones(3, 3, dtype=torch.bool), TypeError, "A must have dtype"),
        ([[1.0, 2.0]], TypeError, "A must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("fn", [cs.linalg.svdvals, cs.linalg.svd])
def test_bad_matrices(fn, A, exc, match):
    with pytest.raises(exc, match=match):
        fn(A)


def test_ops_check_their_arguments_too():
    # Called directly, below the Python checks, the C++ op still refuses.
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        torch.ops.convspectra.svdvals(torch.ones(3))
    with pytest.raises(RuntimeError, match="float32/float64/complex64/complex128"):
        torch.ops.convspectra.svd(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="float32/float64/complex64/complex128"):
        torch.ops.convspectra.svdvals(torch.ones(3, 3, dtype=torch.float16))
