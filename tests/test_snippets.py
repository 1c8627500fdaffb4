"""Every ```python block of README.md and of the docs pages runs.

The blocks of one file run in order in one namespace (a later block may use
what an earlier one defined), in a fresh interpreter started in the repository
root with ``torch`` and ``convspectra as cs`` imported and torch's seed set;
a RuntimeWarning or UserWarning is an error. A failure names the file and the
line of the block; the traceback points at lines of the markdown file itself. Blocks that cannot run (shell commands, output, sketches) use
another fence language: ```bash or ```text.

Doctest examples (``>>>``) in the package's docstrings run as well.
"""

from __future__ import annotations

import doctest
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TIMEOUT_S = 120  # per file

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)[^\n]*$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the block's first code line, code) of every fenced
    block whose language is python (or py), in order. Other fences are
    skipped whole, so a ```python inside a ```text block is not code."""
    blocks = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].lower()
        body, j = [], i + 1
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        if info in ("python", "py", "python3"):
            blocks.append((i + 2, "\n".join(body)))
        i = j + 1
    return blocks


# Runs the blocks of one file; its one argument is JSON: [file name, [[line, code], ...]].
RUNNER = r"""
import json, sys, traceback, warnings
name, blocks = json.loads(sys.argv[1])
namespace = {"__name__": "__main__"}
exec("import torch\nimport convspectra as cs", namespace)
namespace["torch"].manual_seed(0)  # the same inputs on every run
# an example that warns (a search stopped at max_iter, a tensor misused) is wrong
warnings.simplefilter("error", RuntimeWarning)
warnings.simplefilter("error", UserWarning)
for line, code in blocks:
    try:
        # blank lines in front: tracebacks give the markdown file's own line numbers
        exec(compile("\n" * (line - 1) + code, name, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"SNIPPET FAILED: {name}, block at line {line}", file=sys.stderr)
        sys.exit(1)
print(f"{len(blocks)} blocks ran")
"""


def pages_with_blocks():
    return [p for p in PAGES if python_blocks(p.read_text())]


def test_the_extractor():
    text = "x\n```python\na = 1\n```\n```text\n```python\nnot code\n```\n  ```py\n  b = 2\n  ```\n"
    assert python_blocks(text) == [(3, "a = 1"), (10, "b = 2")]


def test_readme_and_docs_have_blocks():
    pages = {p.relative_to(ROOT).as_posix() for p in pages_with_blocks()}
    assert {"README.md", "docs/index.md", "docs/getting-started.md", "docs/examples.md"} <= pages


@pytest.mark.parametrize("page", pages_with_blocks(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_blocks_run(page):
    name = page.relative_to(ROOT).as_posix()
    blocks = python_blocks(page.read_text())
    try:
        out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps([name, blocks])], cwd=ROOT,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: the python blocks took more than {TIMEOUT_S} s")
    if out.returncode != 0:
        where = re.search(r"SNIPPET FAILED: (.*)", out.stderr)
        headline = where.group(1) if where else f"{name}: the runner failed (exit {out.returncode})"
        pytest.fail(f"{headline}\n--- stdout ---\n{out.stdout[-3000:]}\n--- stderr ---\n{out.stderr[-6000:]}")


def _modules_with_doctests() -> list[str]:
    package = ROOT / "python" / "convspectra"
    names = []
    for path in sorted(package.rglob("*.py")):
        if ">>>" in path.read_text():
            parts = path.relative_to(package.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_docstring_examples():
    failed = []
    for name in _modules_with_doctests():
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        if result.failed:
            failed.append(f"{name}: {result.failed} of {result.attempted}")
    assert not failed, failed
