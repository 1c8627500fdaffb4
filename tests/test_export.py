"""cs.nn.export: the plain-torch copy computes the same function, and runs,
pickles and torch.exports where convspectra cannot be imported."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import convspectra as cs


def every_layer(c_in=3):
    model = nn.Sequential(
        cs.nn.CayleyConv2d(c_in, 8, 3), cs.nn.MaxMin(),
        cs.nn.BCOPConv2d(8, 4, 3, stride=2),             # out < in * stride^2: a co-isometry
        cs.nn.GroupSort(2),
        cs.nn.CayleyConv2d(4, 16, 2, stride=2),          # even kernel, strided
        cs.nn.Residual(nn.Sequential(cs.nn.BCOPConv2d(16, 16, 4), nn.ReLU()), scale=0.3),
        nn.Flatten(), cs.nn.OrthogonalLinear(16 * 4, 6, method="bjorck"), cs.nn.OrthogonalLinear(6, 10),
    )
    for p in model.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_export_matches_the_model(dtype, tol):
    model = every_layer().to(dtype).eval()
    x = torch.randn(5, 3, 8, 8, dtype=dtype)
    plain = cs.nn.export(model, 8)
    assert not any(type(m).__module__.startswith("convspectra") for m in plain.modules())
    with torch.no_grad():
        ref, out = model(x), plain(x)
    assert (out - ref).abs().max() <= tol * ref.abs().max()
    assert not plain.training and model.training is False  # flags kept


@pytest.mark.parametrize("H, W", [(6, 10), (7, 5), (9, 9)])
@pytest.mark.parametrize("layer", ["cayley", "bcop"])
def test_export_of_one_conv_at_odd_and_even_sizes(H, W, layer):
    cls = cs.nn.CayleyConv2d if layer == "cayley" else cs.nn.BCOPConv2d
    conv = cls(3, 5, 5).double()  # kernel 5 > W = 5 or not
    for p in conv.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    plain = cs.nn.export(conv, (H, W))
    assert isinstance(plain, nn.Sequential)
    assert torch.allclose(plain(x), conv(x), atol=1e-10)


def test_exported_model_runs_without_convspectra(tmp_path):
    model = every_layer().eval()
    x = torch.randn(3, 3, 8, 8)
    plain = cs.nn.export(model, 8)
    with torch.no_grad():
        expected = model(x)
    torch.save({"model": plain, "x": x, "expected": expected}, tmp_path / "plain.pt")
    code = textwrap.dedent(
        """
        import pickle, sys
        sys.modules["convspectra"] = None  # importing convspectra now fails
        import torch
        try:
            import convspectra
        except ImportError:
            pass
        else:
            raise SystemExit("convspectra is importable")
        d = torch.load(sys.argv[1], weights_only=False)
        model = d["model"]
        with torch.no_grad():
            err = (model(d["x"]) - d["expected"]).abs().max().item()
            again = pickle.loads(pickle.dumps(model))
            err_pickled = (again(d["x"]) - d["expected"]).abs().max().item()
            program = torch.export.export(model, (d["x"],))
            err_exported = (program.module()(d["x"]) - d["expected"]).abs().max().item()
        print(err, err_pickled, err_exported)
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "plain.pt")], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    errors = [float(v) for v in out.stdout.split()]
    scale = float(expected.abs().max())
    assert len(errors) == 3 and max(errors) <= 2e-5 * scale


def test_export_errors():
    shared = cs.nn.MaxMin()
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), shared, nn.Flatten(), nn.Linear(4 * 16, 4), shared)
    with pytest.raises(ValueError, match="two sizes"):
        cs.nn.export(model, 4)
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.spare = nn.Conv2d(2, 2, 1), cs.nn.CayleyConv2d(2, 2, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match="did not run"):
        cs.nn.export(WithSpare(), 4)
    with pytest.raises(TypeError, match="model must be"):
        cs.nn.export("model", 4)
    # a model without convspectra modules comes back as an equal copy
    conv = nn.Conv2d(2, 2, 3)
    copy = cs.nn.export(conv, 5)
    assert copy is not conv and torch.equal(copy.weight, conv.weight)
