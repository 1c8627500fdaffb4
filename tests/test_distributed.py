"""Training convspectra layers with spectral_penalty under DistributedDataParallel
(gloo, 2 processes on localhost): replicas stay identical, the layers stay
orthogonal, and eval caches follow load_state_dict."""

import gc
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import convspectra as cs

WORLD = 2
TIME_LIMIT_S = 180


def make_model():
    torch.manual_seed(0)  # the same start on every rank
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), cs.nn.CayleyConv2d(4, 4, 3), cs.nn.MaxMin(),
        cs.nn.BCOPConv2d(4, 8, 3, stride=2), cs.nn.GroupSort(2), nn.Flatten(), cs.nn.OrthogonalLinear(8 * 16, 3),
    ).double()


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = make_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        for _ in range(4):
            x = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64)
            y = torch.randint(0, 3, (8,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ddp(x), y) + 0.01 * cs.nn.spectral_penalty(model, 8)
            loss.backward()
            opt.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            torch.save({"params": gathered, "state": model.state_dict(),
                        "bound": float(cs.lipschitz_report(model, 8).rows[1].bound),
                        "bcop": float(cs.lipschitz_report(model, 8).rows[3].bound)},
                       os.path.join(out_dir, "result.pt"))
        # DDP's reducer holds the process group: drop it, and wait for the other rank, before tearing
        # gloo down (its worker threads outliving the interpreter abort the process at exit)
        del ddp, opt
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # success: leave without interpreter finalization, where a gloo thread still alive aborts the process
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_training(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIME_LIMIT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP training did not finish within {TIME_LIMIT_S} s")
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    first, second = result["params"]
    assert torch.equal(first, second)  # replicas identical after every step
    start = torch.cat([p.detach().flatten() for p in make_model().parameters()])
    assert not torch.allclose(first, start)  # and they trained
    assert result["bound"] == pytest.approx(1.0, abs=1e-10)  # the Cayley layer stayed orthogonal
    assert result["bcop"] == pytest.approx(1.0, abs=1e-8)

    # eval caches after load_state_dict: a fresh model in eval mode, used once (its caches filled),
    # then loaded with the trained weights, must compute the trained model's function
    trained = make_model()
    trained.load_state_dict(result["state"])
    fresh = make_model().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = fresh(x)
        fresh.load_state_dict(result["state"])
        after = fresh(x)
        expected = trained.eval()(x)
    assert torch.allclose(after, expected, atol=1e-12) and not torch.allclose(before, after)


def test_spectrum_command_splits_the_layers_across_torchrun_processes(tmp_path):
    """`convspectra spectrum` with torchrun's variables (RANK, WORLD_SIZE, ...)
    in 2 processes: each analyses a share of the layers, rank 0 prints the
    table, and its rows are those of a one-process run, in the model's order."""
    import json
    import subprocess
    import sys

    pytest.importorskip("tqdm")
    command = [sys.executable, "-m", "convspectra.cli", "spectrum", "--input-size", "16", "16"]
    single = subprocess.run(command + ["--json", str(tmp_path / "one.json")], capture_output=True, text=True,
                            timeout=TIME_LIMIT_S)
    assert single.returncode == 0, single.stderr
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(command + ["--json", str(tmp_path / f"rank{rank}.json")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIME_LIMIT_S))
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * WORLD, [o[1][-2000:] for o in outs]
    assert "rank 0: layers" in outs[0][1] and "rank 1: layers" in outs[1][1]  # each did a share
    assert outs[1][0] == "" and not (tmp_path / "rank1.json").exists()  # only rank 0 reports
    one = json.loads((tmp_path / "one.json").read_text())
    split = json.loads((tmp_path / "rank0.json").read_text())
    assert [r["name"] for r in split] == [r["name"] for r in one] and len(one) == 17
    for a, b in zip(split, one):
        for key in ("shape", "stride", "input", "circular", "zeros_approx", "certified", "gram"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), (a["name"], key)


def test_the_split_balances_the_cost_and_covers_every_layer_once():
    from convspectra import cli

    layers, sizes = cli._load_model(None, (32, 32), None)
    shares = [cli._share(layers, sizes, r, 3) for r in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(len(layers)))

    def cost(share):
        return sum(sizes[layers[i][1]][0] * sizes[layers[i][1]][1] * layers[i][1].weight.shape[0]
                   * layers[i][1].weight.shape[1] * min(layers[i][1].weight.shape[:2]) for i in share)

    costs = [cost(s) for s in shares]
    assert max(costs) <= 1.5 * min(costs)  # the greedy split of 17 layers over 3 ranks
