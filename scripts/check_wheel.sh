#!/usr/bin/env bash
# Checks the wheel of `make wheel` as a user gets it:
#   1. its metadata pins the torch minor version it was compiled against (and a
#      CUDA build carries its CUDA label);
#   2. `pip install .` with pip's default isolated build stops at once with the
#      one-line instruction instead of failing inside CMake;
#   3. installed into a fresh virtual environment (no system site-packages) that
#      has that torch, it loads its compiled library and computes exact spectra
#      that match the dense operator, run from outside the source tree.
# usage: scripts/check_wheel.sh [python that built the wheel]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
wheel=$(ls -t dist/convspectra-*.whl | head -n 1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "check_wheel: $wheel"
"$PY" - "$wheel" <<'PYEOF'
import re, sys, zipfile
import torch
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
major, minor = torch.__version__.split(".")[:2]
requires = [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l]
assert requires == [f"torch=={major}.{minor}.*"], f"wheel requires {requires}, built with torch {torch.__version__}"
version = re.search(r"^Version: (.+)$", meta, re.M).group(1)
cuda = torch.version.cuda
label = "+cu" + "".join(cuda.split(".")[:2]) if cuda else ""
assert version.endswith(label) and ("+" in version) == bool(cuda), f"version {version} for torch CUDA {cuda}"
print(f"check_wheel: metadata ok: version {version}, requires {requires[0]}")
PYEOF

python_base=$("$PY" -c "import sys; print(sys._base_executable)")
"$python_base" -m venv "$tmp/venv"
vpy="$tmp/venv/bin/python"

# An isolated build (no torch in it) must stop before CMake, with the instruction.
start=$(date +%s)
if "$vpy" -m pip install --no-deps . > "$tmp/isolated.log" 2>&1; then
  echo "check_wheel: an isolated 'pip install .' unexpectedly succeeded"; exit 1
fi
grep -q "pip install --no-build-isolation" "$tmp/isolated.log" || { cat "$tmp/isolated.log"; echo "check_wheel: no instruction"; exit 1; }
grep -q "CMake" "$tmp/isolated.log" && { cat "$tmp/isolated.log"; echo "check_wheel: it reached CMake"; exit 1; }
echo "check_wheel: isolated 'pip install .' stopped after $(( $(date +%s) - start )) s with the instruction"

# the very torch the wheel was built with, local label included (2.13.0+cpu, not
# the CUDA build plain PyPI serves as 2.13.0)
torch_version=$("$PY" -c "import torch; print(torch.__version__)")
for requirement in "torch==$torch_version" "$wheel"; do
  if ! "$vpy" -m pip install -q "$requirement" > "$tmp/pip.log" 2>&1; then
    grep -v "^WARNING: Location" "$tmp/pip.log"
    echo "check_wheel: pip could not install $requirement"
    exit 1
  fi
done
cd "$tmp"
"$vpy" -W error::RuntimeWarning - <<'PYEOF'
import torch
import convspectra as cs
info = cs.backend_info()
assert info["compiled"] and info["torch_mismatch"] is None, info
assert "site-packages" in info["library"], info["library"]  # the installed wheel, not a source tree
# A rank-deficient kernel (duplicated output channels): exact circular spectrum
# against the SVD of the dense operator.
torch.manual_seed(0)
w = torch.randn(2, 3, 3, 3, dtype=torch.float64).repeat(2, 1, 1, 1)
n = 5
basis = torch.eye(3 * n * n, dtype=torch.float64).reshape(-1, 3, n, n)
dense = torch.nn.functional.conv2d(torch.nn.functional.pad(basis, (1, 1, 1, 1), mode="circular"), w)
expected = torch.linalg.svdvals(dense.reshape(3 * n * n, -1).T)
got = cs.singular_values(w, (n, n)).sort(descending=True).values
assert torch.allclose(got, expected[: got.numel()], atol=1e-10), (got[:5], expected[:5])
print(f"check_wheel: installed convspectra {cs.__version__} ({info['library']}) matches the dense operator")
PYEOF
"$tmp/venv/bin/convspectra" --version
