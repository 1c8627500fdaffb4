"""The convspectra command: spectrum, bench, info."""

import json

import pytest
import torch
from torch import nn

import convspectra as cs
from convspectra import cli


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2, padding=1),
                         nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"))


def test_spectrum_of_a_saved_module(tmp_path, capsys):
    m = model()
    torch.save(m, tmp_path / "m.pt")
    rc = cli.main(["spectrum", str(tmp_path / "m.pt"), "--input-size", "12", "10",
                   "--plot", str(tmp_path / "s.png"), "--json", str(tmp_path / "s.json")])
    assert rc == 0
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [r["name"] for r in rows] == ["0", "2", "3"]
    assert [r["input"] for r in rows] == ["12x10", "12x10", "6x5"]
    w0, w2, w3 = m[0].weight.detach(), m[2].weight.detach(), m[3].weight.detach()
    assert rows[0]["circular"] == pytest.approx(cs.spectral_norm(w0, (12, 10)).item(), rel=1e-5)
    assert rows[0]["zeros_approx"] == pytest.approx(cs.singular_values(w0, (12, 10), padding="zeros")[0].item(), rel=1e-5)
    assert rows[0]["certified"] == pytest.approx(cs.spectral_norm(w0, (12, 10), "zeros", "certified").item(), rel=1e-5)
    assert rows[0]["gram"] == pytest.approx(cs.spectral_norm(w0, (12, 10), "zeros", "gram").item(), rel=1e-5)
    # the strided layer: its exact circular spectrum (polyphase), no zero-padding approximation
    assert rows[1]["circular"] == pytest.approx(cs.singular_values(w2, (12, 10), stride=2)[0].item(), rel=1e-5)
    assert rows[1]["zeros_approx"] is None
    assert rows[2]["gram"] == pytest.approx(cs.spectral_norm(w3, (6, 5), "circular", "gram").item(), rel=1e-5)
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "certified" in out and "12x10" in out


def test_spectrum_of_a_state_dict(tmp_path, capsys):
    torch.save(model().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(SystemExit, match="--input-size"):
        cli.main(["spectrum", str(tmp_path / "sd.pt")])
    assert cli.main(["spectrum", str(tmp_path / "sd.pt"), "--input-size", "8", "8", "--json",
                     str(tmp_path / "sd.json")]) == 0
    rows = json.loads((tmp_path / "sd.json").read_text())
    assert [r["name"] for r in rows] == ["0", "2", "3"] and all(r["input"] == "8x8" for r in rows)


def test_spectrum_rejects_other_objects(tmp_path):
    torch.save([1, 2, 3], tmp_path / "x.pt")
    with pytest.raises(SystemExit, match="not a module or a state dict"):
        cli.main(["spectrum", str(tmp_path / "x.pt")])


def test_demo_model_is_resnet18_shaped():
    convs = [m for m in cli.resnet18_demo().modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 17
    assert tuple(convs[0].weight.shape) == (64, 3, 7, 7) and tuple(convs[-1].weight.shape) == (512, 512, 3, 3)
    sizes = cs.nn.conv_input_sizes(cli.resnet18_demo(), (224, 224))
    assert sorted(set(sizes.values()), reverse=True) == [(224, 224), (56, 56), (28, 28), (14, 14), (7, 7)]


def test_bench_and_info_commands(tmp_path, capsys):
    assert cli.main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["compiled"] is True
    rc = cli.main(["bench", "--quick", "--filter", "c16@32", "--min-run-time", "0.01", "--json", str(tmp_path / "b.json")])
    assert rc == 0
    data = json.loads((tmp_path / "b.json").read_text())
    row = data["rows"][0]
    for key in ("case", "shape", "device", "reference_ms", "convspectra_ms", "ratio", "reference_peak_bytes",
                "convspectra_peak_bytes"):
        assert key in row
    assert row["ratio"] == pytest.approx(row["reference_ms"] / row["convspectra_ms"])
    assert row["ok"] and data["meta"]["torch"] == torch.__version__
