#!/usr/bin/env bash
# Sets up .venv and builds convspectra into it; safe to run again (the CMake
# build directory under build/ is reused, so rebuilds are incremental).
#   - the venv sees system site-packages, so a torch already installed on the
#     machine (a CUDA build on a GPU box) is used as is;
#   - otherwise torch is pinned to 2.13.0 (a plain `pip install torch` would
#     pull a multi-GB CUDA build);
#   - only missing build/test tools are installed, so a machine without
#     network access but with them preinstalled works too.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi

missing=$("$PY" - <<'PYEOF'
import importlib.util
need = {"scikit_build_core": "scikit-build-core>=0.11,<2", "ninja": "ninja", "numpy": "numpy", "pytest": "pytest>=7",
        "matplotlib": "matplotlib", "tqdm": "tqdm", "sklearn": "scikit-learn", "hypothesis": "hypothesis>=6",
        "yaml": "pyyaml"}
print(" ".join(spec for mod, spec in need.items() if importlib.util.find_spec(mod) is None))
PYEOF
)
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  "$PY" -m pip install -q $missing
fi

# --no-build-isolation: compile against the torch that will run the extension.
"$PY" -m pip install -q --no-build-isolation --no-deps .
"$PY" -c "import convspectra as cs; i = cs.backend_info(); print('convspectra built: compiled=%s cuda=%s torch=%s' % (i['compiled'], i['cuda'], i['torch']))"
