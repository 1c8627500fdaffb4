#!/usr/bin/env bash
# Builds the documentation site into site/ with warnings as errors:
#   1. installs mkdocs, mkdocstrings[python] and matplotlib into $PY, only
#      those missing (a machine without network access but with them works);
#   2. draws the benchmark speed-up plots from bench/results/*.json into
#      docs/img/bench/ (generated, git-ignored) with the installed convspectra
#      (`make docs` runs scripts/setup.sh first, so it is the checkout's code);
#   3. mkdocs build --strict.
# Usage: scripts/build_docs.sh [extra mkdocs build arguments]; PY=python to pick
# the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

missing=$("$PY" - <<'PYEOF'
import importlib.util
need = {"mkdocs": "mkdocs>=1.6", "mkdocstrings": "mkdocstrings[python]>=0.26",
        "mkdocstrings_handlers.python": "mkdocstrings[python]>=0.26", "pymdownx": "pymdown-extensions",
        "matplotlib": "matplotlib"}
def found(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False
print(" ".join(sorted({spec for module, spec in need.items() if not found(module)})))
PYEOF
)
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  "$PY" -m pip install -q $missing
fi

if ! "$PY" -c "import convspectra.bench.plot" 2>/dev/null; then
  echo "build_docs.sh: $PY cannot import convspectra.bench.plot; run scripts/setup.sh (or make docs) first" >&2
  exit 1
fi
# stale plots of a device no longer in bench/results/ must not survive
rm -rf docs/img/bench
"$PY" -m convspectra.bench.plot bench/results docs/img/bench

"$PY" -m mkdocs build --strict "$@"
