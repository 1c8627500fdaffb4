"""The ``convspectra`` command: ``bench``, ``spectrum``, ``lipschitz`` and ``info``."""

from __future__ import annotations

import argparse
import json
import sys
import time


def resnet18_demo():
    """A ResNet-18-shaped stack of randomly initialised convs (main path only,
    residual additions and downsample shortcuts left out), seeded."""
    import torch
    from torch import nn

    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.ReLU(),
                               nn.MaxPool2d(3, stride=2, padding=1)]
    c = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            layers += [nn.Conv2d(c, width, 3, stride=s, padding=1, bias=False), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.ReLU()]
            c = width
    model = nn.Sequential(*layers)
    with torch.random.fork_rng(devices=[]):  # the same demo every run, and on every rank of a split one
        torch.manual_seed(0)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


def _load_model(path: str | None, input_size, in_channels):
    """(named conv layers, {conv: input size}) from a saved module, a state
    dict, or the demo."""
    import torch
    from torch import nn

    import convspectra as cs

    if path is None:
        model = resnet18_demo()
    else:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(obj, dict):
            if input_size is None:
                raise SystemExit("convspectra spectrum: a state dict carries no layer sizes; give --input-size H W")
            # every 4-D weight is taken as a zero-padded, stride-1 Conv2d seeing --input-size
            layers = []
            for name, t in obj.items():
                if isinstance(t, torch.Tensor) and t.dim() == 4 and name.endswith("weight") and t.is_floating_point():
                    conv = nn.Conv2d(t.shape[1], t.shape[0], tuple(t.shape[-2:]), bias=False)
                    conv.weight = nn.Parameter(t.detach().float(), requires_grad=False)
                    layers.append((name.removesuffix(".weight"), conv))
            return layers, {conv: tuple(input_size) for _, conv in layers}
        if not isinstance(obj, nn.Module):
            raise SystemExit(f"convspectra spectrum: {path} holds a {type(obj).__name__}, not a module or a state dict")
        model = obj
    size = tuple(input_size) if input_size is not None else (224, 224)
    sizes = cs.nn.conv_input_sizes(model, size, in_channels)
    layers = [(name or "model", m) for name, m in model.named_modules() if m in sizes]
    return layers, sizes


def _analyse(conv, size, plot: bool) -> dict:
    import torch

    import convspectra as cs
    from convspectra.nn.penalty import effective_kernel

    t0 = time.perf_counter()
    H, W = size
    s = conv.stride[0] if conv.stride[0] == conv.stride[1] else None
    weight = effective_kernel(conv, conv.weight.detach())
    per_group = weight.shape[0] // conv.groups
    groups = [weight[g * per_group : (g + 1) * per_group] for g in range(conv.groups)]
    padding = conv.padding_mode if conv.padding_mode in ("zeros", "circular") else None
    row = {"shape": "x".join(map(str, conv.weight.shape)), "stride": conv.stride[0], "groups": conv.groups,
           "input": f"{H}x{W}", "padding": conv.padding_mode}
    circ, zeros, cert, gram, spectra = [], [], [], [], {"circular": [], "zeros": []}
    with torch.no_grad():
        for w in groups:
            kh, kw = w.shape[-2:]
            if kh > H or kw > W:
                continue
            # a strided layer's exact circular spectrum through the polyphase split
            exact_stride = s is not None and H % s == 0 and W % s == 0
            sv = cs.singular_values(w, (H, W), stride=s if exact_stride else 1)
            circ.append(sv[0])
            if plot:
                spectra["circular"].append(sv)
            if conv.stride == (1, 1):
                zsv = cs.singular_values(w, (H, W), padding="zeros")
                zeros.append(zsv[0])
                if plot:
                    spectra["zeros"].append(zsv)
            cert.append(cs.spectral_norm(w, (H, W), "zeros", "certified"))
            if padding is not None:
                gram.append(cs.spectral_norm(w, (H, W), padding, "gram"))

    def top(values):
        return float(torch.stack(values).max()) if values else None

    row.update(circular=top(circ), zeros_approx=top(zeros), certified=top(cert), gram=top(gram),
               seconds=time.perf_counter() - t0)
    if plot:
        row["_spectra"] = {k: torch.cat(v).float().numpy() for k, v in spectra.items() if v}
    return row


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(rows)
    cols = min(4, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows):
        spectra = row.get("_spectra", {})
        for label, color in (("circular", "tab:blue"), ("zeros", "tab:orange")):
            if label in spectra:
                v = spectra[label]
                bins = np.linspace(0, float(max(s.max() for s in spectra.values())) * 1.02 + 1e-12, 60)
                ax.hist(v, bins=bins, density=True, histtype="step", color=color,
                        label="circular (exact)" if label == "circular" else "zero padding (approx.)")
        ax.set_title(f"{row['name']}\n{row['shape']} @{row['input']}" + (f" s{row['stride']}" if row["stride"] > 1 else ""),
                     fontsize=8)
        ax.set_xlabel("singular value", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(x):
    return "-" if x is None else f"{x:.4f}"


def _distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) under torchrun (its RANK / WORLD_SIZE variables, a
    gloo process group started here), else (0, 1)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _share(layers, sizes, rank: int, world: int) -> list[int]:
    """The indices of the layers this rank analyses: the costliest layer first
    to the least loaded rank (cost: frequencies x c_out x c_in x min(c_out, c_in),
    the per-frequency SVDs), the same split on every rank."""
    def cost(i):
        conv = layers[i][1]
        H, W = sizes[conv]
        c_out, c_in = conv.weight.shape[:2]
        return H * W * c_out * c_in * min(c_out, c_in)

    load, owner = [0] * world, {}
    for i in sorted(range(len(layers)), key=lambda i: (-cost(i), i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += cost(i)
    return [i for i in range(len(layers)) if owner[i] == rank]


def _gather_rows(rows: dict, rank: int, world: int) -> dict:
    """Every rank's rows on rank 0 (an empty dict elsewhere); the process group ends."""
    import torch.distributed as dist

    gathered = [None] * world if rank == 0 else None
    dist.gather_object(rows, gathered, dst=0)
    dist.destroy_process_group()
    return {i: r for part in gathered for i, r in part.items()} if rank == 0 else {}


def spectrum_main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="convspectra spectrum",
        description="Per-layer spectra of a model's Conv2d layers: exact circular norm, zero-padding "
        "approximation, certified and Gram bounds. Under torchrun (torchrun --nproc-per-node N -m "
        "convspectra.cli spectrum ...) the layers are split across the processes and rank 0 prints the table.",
    )
    p.add_argument("model", nargs="?", help="a torch.save'd nn.Module or state dict (default: a ResNet-18-shaped demo)")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help="the model's input size (default 224 224)")
    p.add_argument("--in-channels", type=int, help="input channels (default: the first Conv2d's)")
    p.add_argument("--plot", metavar="FILE", help="write a PNG of each layer's singular value distribution")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    args = p.parse_args(argv)
    try:
        from tqdm import tqdm
    except ImportError:
        raise SystemExit("convspectra spectrum needs tqdm (and matplotlib for --plot): pip install 'convspectra[cli]'")
    if args.input_size is not None and min(args.input_size) < 1:
        p.error("--input-size must be positive")

    layers, sizes = _load_model(args.model, args.input_size, args.in_channels)
    rank, world = _distributed_rank_world()
    mine = _share(layers, sizes, rank, world)
    rows = {}
    for i in tqdm(mine, desc="layers" if world == 1 else f"rank {rank}: layers", unit="layer", file=sys.stderr):
        name, conv = layers[i]
        rows[i] = _analyse(conv, sizes[conv], plot=bool(args.plot))
        rows[i]["name"] = name
    if world > 1:
        rows = _gather_rows(rows, rank, world)
        if rank != 0:
            return 0
    rows = [rows[i] for i in range(len(layers))]
    head = ["layer", "shape", "stride", "input", "padding", "circular", "zeros approx", "certified", "gram", "time s"]
    body = [[r["name"], r["shape"], str(r["stride"]), r["input"], r["padding"], _fmt(r["circular"]),
             _fmt(r["zeros_approx"]), _fmt(r["certified"]), _fmt(r["gram"]), f"{r['seconds']:.2f}"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    for cells in [head, ["-" * w for w in widths]] + body:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    if args.plot:
        _plot(rows, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], f, indent=2)
    return 0


def _load_module(spec: str):
    """An nn.Module from a torch.save'd file, or from ``package.module:factory``
    (a callable returning the model, or the model itself)."""
    import importlib
    import os

    import torch
    from torch import nn

    if os.path.exists(spec):
        obj = torch.load(spec, map_location="cpu", weights_only=False)
    elif ":" in spec:
        module_name, attr = spec.split(":", 1)
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise SystemExit(f"convspectra lipschitz: cannot load {spec!r}: {e}")
        obj = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    else:
        raise SystemExit(f"convspectra lipschitz: {spec!r} is neither a file nor package.module:factory")
    if not isinstance(obj, nn.Module):
        raise SystemExit(f"convspectra lipschitz: {spec} holds a {type(obj).__name__}, not an nn.Module")
    return obj


def lipschitz_main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="convspectra lipschitz",
        description="A certified L2 Lipschitz bound of a model, layer by layer (cs.lipschitz_report).",
    )
    p.add_argument("model", help="a torch.save'd nn.Module, or package.module:factory")
    p.add_argument("--input-size", nargs="+", type=int, required=True, metavar="N",
                   help="C H W for images, or F for flat inputs")
    p.add_argument("--no-verify", action="store_true", help="take the orthogonal layers' constant as 1 unmeasured")
    args = p.parse_args(argv)
    if len(args.input_size) not in (1, 3) or min(args.input_size) < 1:
        p.error("--input-size must be C H W or F, positive")
    import convspectra as cs

    model = _load_module(args.model)
    if len(args.input_size) == 3:
        c, h, w = args.input_size
        report = cs.lipschitz_report(model, (h, w), in_channels=c, verify=not args.no_verify)
    else:
        first = next((m for m in model.modules() if hasattr(m, "in_features")), None)
        if first is None or first.in_features != args.input_size[0]:
            p.error(f"--input-size {args.input_size[0]}: the model's first linear layer takes "
                    f"{getattr(first, 'in_features', 'no flat')} features")
        report = cs.lipschitz_report(model, None, verify=not args.no_verify)
    print(report)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="convspectra", description="Spectra of convolutional layers.")
    if argv[:1] == ["--version"]:  # before the subcommands, which are required otherwise
        import convspectra

        print(f"convspectra {convspectra.__version__}")
        return 0
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="microbenchmarks against the plain-PyTorch reference", add_help=False)
    sub.add_parser("spectrum", help="per-layer spectra of a model (or a ResNet-18-shaped demo)", add_help=False)
    sub.add_parser("lipschitz", help="a certified Lipschitz bound of a model, layer by layer", add_help=False)
    sub.add_parser("info", help="print what this install runs (compiled library, CUDA kernels, torch)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from . import bench

        return bench.main(rest)
    if args.command == "spectrum":
        return spectrum_main(rest)
    if args.command == "lipschitz":
        return lipschitz_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    import convspectra

    print(json.dumps(convspectra.backend_info(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
