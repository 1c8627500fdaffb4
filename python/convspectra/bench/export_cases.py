"""Eval speed of a model exported to plain torch modules (cs.nn.export)
against the convspectra model itself, side by side."""

from __future__ import annotations

import torch
from torch import nn

import convspectra as cs

from .case import N_INPUT_SETS, Case

FAMILY = "nn.export: plain-torch copy vs the convspectra model (eval)"


def _digits_net(layer: str) -> nn.Module:
    conv = {"cayley": cs.nn.CayleyConv2d, "bcop": cs.nn.BCOPConv2d}[layer]
    return nn.Sequential(conv(1, 16, 3), cs.nn.MaxMin(), conv(16, 64, 3, stride=2), cs.nn.MaxMin(),
                         conv(64, 128, 3, stride=2), cs.nn.MaxMin(), nn.Flatten(),
                         cs.nn.OrthogonalLinear(512, 10, method="cayley" if layer == "cayley" else "bjorck"))


def _case(name: str, build, c_in: int, n: int, batch: int) -> Case:
    models = {}

    def make(device):
        torch.manual_seed(0)
        model = build().to(device).eval()
        models["pair"] = (model, cs.nn.export(model, n).eval())  # one device per run
        return tuple(torch.randn(batch, c_in, n, n, device=device) for _ in range(N_INPUT_SETS))

    def run(x, exported):
        with torch.no_grad():
            return models["pair"][exported](x)

    return Case(family=FAMILY, name=name, shape=f"batch {batch} @ {c_in}x{n}x{n}", make_inputs=make,
                ours=lambda x: run(x, 0), reference=lambda x: run(x, 1), bytes_moved=0, tol=1e-4,
                quick=name == "digits cayley")


def export_cases() -> list[Case]:
    return [
        _case("digits cayley", lambda: _digits_net("cayley"), 1, 8, 256),
        _case("digits bcop", lambda: _digits_net("bcop"), 1, 8, 256),
        _case("CayleyConv2d 16->16 k3", lambda: cs.nn.CayleyConv2d(16, 16, 3), 16, 32, 64),
        _case("BCOPConv2d 16->16 k3", lambda: cs.nn.BCOPConv2d(16, 16, 3), 16, 32, 64),
    ]
