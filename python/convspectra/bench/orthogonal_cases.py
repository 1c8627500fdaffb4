"""Case families of the orthogonal layers: the Cayley map, Bjorck, the BCOP
kernel, and a training step of CayleyConv2d and BCOPConv2d."""

from __future__ import annotations

import torch

import convspectra as cs

from .case import N_INPUT_SETS, Case, forward_backward

CAYLEY_GRID = [(16, 32), (64, 32), (128, 16), (256, 8)]  # (c, n): F = n (n/2 + 1) matrices of c x c
BJORCK_CHANNELS = [16, 64, 128, 256, 512]


def cayley_cases() -> list[Case]:
    """The Cayley map on F = n (n/2 + 1) complex c x c matrices (forward and
    backward), and a CayleyConv2d training step (forward + backward, batch 128)
    against the published recipe (torch.inverse per frequency, full fft2 grid)."""
    cases = []
    for c, n in CAYLEY_GRID:
        F = n * (n // 2 + 1)
        for direction in ("forward", "backward"):

            def make(device, c=c, F=F, grad=direction == "backward"):
                return tuple((torch.randn(F, c, c, dtype=torch.complex64, device=device) / c**0.5)
                             .requires_grad_(grad) for _ in range(N_INPUT_SETS))

            cases.append(Case(
                family="cayley map", name=f"c{c}@{n}", shape=f"{F}x{c}x{c} complex", make_inputs=make,
                ours=lambda W: torch.view_as_real(cs.linalg.cayley(W)),
                reference=lambda W: torch.view_as_real(cs.reference.cayley(W)),
                bytes_moved=(2 if direction == "forward" else 4) * F * c * c * 8, direction=direction,
                quick=c == 16 and direction == "forward", tol=1e-3,
            ))
        cases.append(_cayley_layer_case(c, n))
    return cases


def _training_step_case(family: str, layer_class, reference_forward, c: int, n: int, batch: int = 128) -> Case:
    """One training step of a c -> c 3x3 orthogonal layer (forward, loss,
    backward) against reference_forward(layer, x), the published recipe on the
    same parameters. The result compared is the loss and every gradient."""
    layers = {}

    def make(device):
        torch.manual_seed(0)
        layers[device] = layer_class(c, c, 3).to(device)
        return tuple(torch.randn(batch, c, n, n, device=device) for _ in range(N_INPUT_SETS))

    def step(x, reference):
        layer = layers[x.device]
        layer.zero_grad(set_to_none=True)
        y = reference_forward(layer, x) if reference else layer(x)
        loss = y.square().mean()
        loss.backward()
        return torch.cat([loss.detach().reshape(1)] + [p.grad.flatten() for p in layer.parameters()])

    return Case(
        family=family, name=f"c{c}@{n}", shape=f"batch {batch}, {c}x{c}x3x3 @{n}x{n}",
        make_inputs=make, ours=lambda x: step(x, False), reference=lambda x: step(x, True),
        bytes_moved=4 * batch * c * n * n * 4, direction="fwd+bwd", quick=False, tol=1e-3,
    )


def _cayley_layer_case(c: int, n: int) -> Case:
    return _training_step_case(
        "CayleyConv2d training step", cs.nn.CayleyConv2d,
        lambda layer, x: cs.reference.cayley_conv2d(x, layer.weight, layer.alpha, layer.bias), c, n)


def bcop_cases() -> list[Case]:
    """Bjorck (20 steps) on the 2(k-1)+1 = 5 free c x c matrices of a 3 x 3
    BCOP layer, the BCOP kernel construction (both forward + backward), and a
    BCOPConv2d training step (batch 128), against the published recipe: a
    Python loop of products per matrix and per pair of taps."""
    cases = []
    for c in BJORCK_CHANNELS:
        def make(device, c=c):
            return tuple(torch.stack([torch.linalg.qr(torch.randn(c, c, device=device))[0] for _ in range(5)])
                         for _ in range(N_INPUT_SETS))

        cases.append(Case(
            family="bjorck", name=f"c{c}", shape=f"5x{c}x{c}, 20 steps", make_inputs=make,
            ours=lambda W: forward_backward(cs.linalg.bjorck, W),
            reference=lambda W: forward_backward(cs.reference.bjorck, W),
            bytes_moved=5 * c * c * 4 * 4, direction="fwd+bwd", quick=c == 16, tol=1e-3,
        ))
        cases.append(Case(
            family="BCOP kernel", name=f"c{c}", shape=f"{c}x{c}x3x3 from 5x{c}x{c}", make_inputs=make,
            ours=lambda W, c=c: forward_backward(lambda w: cs.nn.bcop_kernel(w, c, c), W),
            reference=lambda W, c=c: forward_backward(lambda w: cs.reference.bcop_kernel(w, c, c), W),
            bytes_moved=5 * c * c * 4 * 4, direction="fwd+bwd", quick=False, tol=1e-3,
        ))
    return cases + [_bcop_layer_case(c, n) for c, n in CAYLEY_GRID]


def _bcop_layer_case(c: int, n: int) -> Case:
    return _training_step_case(
        "BCOPConv2d training step", cs.nn.BCOPConv2d,
        lambda layer, x: cs.reference.bcop_conv2d(x, layer.matrices, c, layer.bias), c, n)
