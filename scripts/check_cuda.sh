#!/usr/bin/env bash
# Compiles the CUDA code on a machine without a GPU, so that CUDA code that
# does not build fails CI:
#   1. every csrc/cuda/*.cu with nvcc for sm_90 (object files only; the
#      kernels need no torch headers);
#   2. a syntax check of the torch-side CUDA glue (csrc/cuda/*.cpp) against the
#      installed torch's headers. A CPU torch lacks one generated CUDA config
#      header, which a one-line stand-in replaces for this check only.
# Usage: scripts/check_cuda.sh [python-with-torch]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}

if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_cuda: nvcc not found, CUDA compile check skipped"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for f in csrc/cuda/*.cu; do
  echo "check_cuda: nvcc -arch=sm_90 $f"
  nvcc -std=c++17 -O3 -arch=sm_90 -Icsrc -Werror all-warnings -c "$f" -o "$out/$(basename "$f").o"
done

cuda_include=""
for d in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")" /usr/local/cuda; do
  if [ -n "$d" ] && [ -f "$d/include/cuda_runtime_api.h" ]; then
    cuda_include="$d/include"
    break
  fi
done
if [ -z "$cuda_include" ]; then
  echo "check_cuda: CUDA headers not found (set CUDA_HOME)"
  exit 1
fi
torch_include=$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
shim="$out/shim"
if [ ! -f "$torch_include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  mkdir -p "$shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$shim/c10/cuda/impl/cuda_cmake_macros.h"
fi
for f in csrc/cuda/*.cpp; do
  echo "check_cuda: syntax check $f"
  g++ -std=c++20 -fsyntax-only -Wall -Wextra -Wno-unused-parameter -Werror -Icsrc -I"$shim" \
    -I"$torch_include" -I"$torch_include/torch/csrc/api/include" -I"$cuda_include" "$f"
done
echo "check_cuda: ok"
