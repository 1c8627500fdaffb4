#!/usr/bin/env bash
# The whole GPU check in one command, for a machine with a GPU and a CUDA
# build of torch: build for sm_90 with the CUDA kernels required, run the test
# suite (the CUDA cases run there), then the GPU benchmark. Logs and JSON go to
# $OUT (default ./gpu_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export CONVSPECTRA_CUDA=ON CONVSPECTRA_CUDA_ARCHITECTURES=${CONVSPECTRA_CUDA_ARCHITECTURES:-90}
export PYTHONUNBUFFERED=1

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
if ! "$PY" -m pip install --no-build-isolation --no-deps -v . >"$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"
  echo "gpu_check: build failed"
  exit 1
fi
grep -E "ptxas info|spill" "$OUT/build.log" | head -40 || true
"$PY" -c "import json, convspectra as cs; print(json.dumps(cs.backend_info(), indent=1))" | tee "$OUT/backend.json"

"$PY" -m pytest -q -rs tests 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}
"$PY" -m convspectra.bench --device cuda ${BENCH_ARGS:-} --json "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu_check: tests rc=$tests_rc bench rc=$bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
