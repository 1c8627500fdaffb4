#!/usr/bin/env bash
# The whole GPU check in one command, for a machine with a GPU and a CUDA
# build of torch (no network needed: it installs nothing but this package):
#   1. build for sm_90 with the CUDA kernels required          (cap BUILD_S)
#   2. the test suite's CUDA cases (the CPU ones ran in CI)    (cap TESTS_S)
#   3. compute-sanitizer memcheck and racecheck on every kernel (cap SANITIZER_S)
#   4. the GPU benchmark, --quick first, then the whole suite   (cap BENCH_S)
# Each phase runs under its own time cap, so one that hangs cannot eat the
# next; the defaults add up to about 8 minutes. Exactly eight files go to $OUT
# (default ./gpu_out): summary.txt, env.txt, build.log, tests.log,
# sanitizer.log, bench.log, bench_quick.json, bench_cuda.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUILD_S=${BUILD_S:-210} TESTS_S=${TESTS_S:-120} SANITIZER_S=${SANITIZER_S:-60} BENCH_S=${BENCH_S:-90}
export CONVSPECTRA_CUDA=ON CONVSPECTRA_CUDA_ARCHITECTURES=${CONVSPECTRA_CUDA_ARCHITECTURES:-90} CONVSPECTRA_PTXAS_VERBOSE=ON
export PYTHONUNBUFFERED=1
summary="$OUT/summary.txt"
: >"$summary"

phase() {  # phase NAME CAP LOG COMMAND...: run under the cap, record rc and seconds
  local name=$1 cap=$2 log=$3
  shift 3
  local t0=$SECONDS
  timeout --kill-after=10 "$cap" "$@" >>"$log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0)) cap=$cap$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo ' TIMED OUT')" | tee -a "$summary"
  return $rc
}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch here; nothing was built or checked" | tee -a "$summary"
  exit 2
fi

{
  nvidia-smi 2>&1 || true
  command -v compute-sanitizer || echo "compute-sanitizer: not found"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$PY" -c "import scikit_build_core; print('scikit-build-core', scikit_build_core.__version__)"  # pyproject needs >= 0.11
} >"$OUT/env.txt" 2>&1

if ! phase build "$BUILD_S" "$OUT/build.log" "$PY" -m pip install --no-build-isolation --no-deps -v .; then
  tail -40 "$OUT/build.log"
  exit 1
fi
{
  grep -E "ptxas info|spill" "$OUT/build.log" | head -40
  "$PY" -c "import json, convspectra as cs; print(json.dumps(cs.backend_info(), indent=1))"
} >>"$OUT/env.txt" 2>&1

# the CUDA cases only, spread over the cores when pytest-xdist is there
xdist=()
"$PY" -c "import xdist" 2>/dev/null && xdist=(-n 8)
phase tests "$TESTS_S" "$OUT/tests.log" "$PY" -m pytest -q -rfE -k cuda "${xdist[@]}" tests
tail -3 "$OUT/tests.log" | tee -a "$summary"

if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool" >>"$OUT/sanitizer.log"
    phase "sanitizer-$tool" $((SANITIZER_S / 2)) "$OUT/sanitizer.log" \
      compute-sanitizer --tool "$tool" --error-exitcode 3 "$PY" scripts/gpu_smoke.py cuda
  done
  grep -E "ERROR SUMMARY|gpu_smoke:" "$OUT/sanitizer.log" | tee -a "$summary"
else
  echo "sanitizer: compute-sanitizer not found; smoke run only" | tee -a "$summary"
  phase smoke "$SANITIZER_S" "$OUT/sanitizer.log" "$PY" scripts/gpu_smoke.py cuda
fi

phase bench-quick $((BENCH_S / 4)) "$OUT/bench.log" \
  "$PY" -m convspectra.bench --device cuda --quick --json "$OUT/bench_quick.json"
phase bench $((BENCH_S * 3 / 4)) "$OUT/bench.log" \
  "$PY" -m convspectra.bench --device cuda --full ${BENCH_ARGS:---min-run-time 0.1} --json "$OUT/bench_cuda.json"
tail -60 "$OUT/bench.log"
echo "== summary"
cat "$summary"
! grep -q "rc=[1-9]" "$summary"
