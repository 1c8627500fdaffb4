"""Every CUDA kernel once, on small structured inputs, against the CPU kernels:
the program that scripts/gpu_check.sh runs under compute-sanitizer (memcheck,
racecheck), so it stays small. Prints one line per case and exits 1 on a
mismatch or a non-finite output. `python scripts/gpu_smoke.py cpu` runs the
same comparisons on the CPU (a dry run of the script itself)."""

from __future__ import annotations

import sys

import torch

import convspectra as cs

sys.path.insert(0, "tests")
from structured import structured_batch  # noqa: E402


def check(name: str, gpu: torch.Tensor, cpu: torch.Tensor, tol: float) -> bool:
    gpu = gpu.cpu()
    finite = bool(torch.isfinite(gpu).all())
    err = float((gpu.to(cpu.dtype) - cpu).abs().max() / cpu.abs().max().clamp_min(1e-30))
    ok = finite and err <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max rel err {err:.2e}{'' if finite else ' (non-finite)'}")
    return ok


def main(device: str) -> int:
    if device == "cuda" and (not torch.cuda.is_available() or not cs.backend_info()["cuda"]):
        print("gpu_smoke: no CUDA kernels in this build or no GPU")
        return 1
    ok = True
    # (kind, m, n): small shared-memory sizes and odd column counts; 40x24 and 100x90 reach Bjorck's
    # 2, 4 and 8-row register tiles and Cayley's larger shared systems; 160x120 puts the SVD with
    # vectors in global scratch (past the 227 KiB of shared memory) and the rest on the batched paths
    cases = [("identical_rows", 8, 8), ("gaussian", 5, 3), ("rank_one", 3, 7), ("gaussian", 40, 24),
             ("duplicated_rows", 100, 90), ("gaussian", 160, 120)]
    for kind, m, n in cases:
        for dtype in (torch.float32, torch.complex64, torch.float64, torch.complex128):
            A = structured_batch(kind, 6, m, n, dtype, seed=m * n)
            tol = 1e-4 if dtype in (torch.float32, torch.complex64) else 1e-10
            ok &= check(f"svdvals {kind} {m}x{n} {dtype}", torch.ops.convspectra.svdvals(A.to(device)),
                        torch.linalg.svdvals(A), tol)
            U, S, Vh = torch.ops.convspectra.svd(A.to(device))
            ok &= check(f"svd {kind} {m}x{n} {dtype}", U @ torch.diag_embed(S.to(U.dtype)) @ Vh, A, tol)
            ok &= check(f"gram_bound {m}x{n} {dtype}", torch.ops.convspectra.gram_bound(A.to(device), 5),
                        torch.ops.convspectra.gram_bound(A, 5), tol)
            W = A / A.abs().amax((-2, -1), keepdim=True).clamp_min(1e-30)
            Qg, Mg = torch.ops.convspectra.cayley(W.to(device))
            Qc, Mc = torch.ops.convspectra.cayley(W)
            ok &= check(f"cayley {m}x{n} {dtype}", Qg, Qc, tol)
            G = torch.randn_like(W)
            ok &= check(f"cayley_backward {m}x{n} {dtype}",
                        torch.ops.convspectra.cayley_backward(G.to(device), W.to(device), Mg),
                        torch.ops.convspectra.cayley_backward(G, W, Mc), 10 * tol)
            X = W / torch.ops.convspectra.gram_bound(W, 5)[..., None, None].clamp_min(1e-30)
            ok &= check(f"bjorck {m}x{n} {dtype}", torch.ops.convspectra.bjorck(X.to(device), 6),
                        torch.ops.convspectra.bjorck(X, 6), tol)
            ok &= check(f"bjorck_backward {m}x{n} {dtype}", torch.ops.convspectra.bjorck_backward(
                G.to(device), X.to(device), 6), torch.ops.convspectra.bjorck_backward(G, X, 6), 10 * tol)
    w = torch.randn(6, 4, 3, 3)
    ok &= check("singular_values 6x4x3x3 @16", cs.singular_values(w.to(device), (16, 16)),
                cs.singular_values(w, (16, 16)), 1e-4)
    if device == "cuda":
        torch.cuda.synchronize()
    print("gpu_smoke:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cuda"))
