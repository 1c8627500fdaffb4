"""The layout's promises: the fast path never imports the oracle it is tested
against (only linalg's fallback does, inside the function), and one name per
thing (the conv-level SVD is conv_svd; cs.svd is its deprecated alias)."""

import ast
from pathlib import Path

import pytest
import torch

import convspectra as cs

PACKAGE = Path(cs.__file__).parent
ALLOWED = {"__init__.py", "reference.py", "cli.py"}  # the public re-export, the oracle, the command line


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # module level only: a function may import the fallback lazily
        if isinstance(node, ast.ImportFrom):
            names |= {f"{node.module or ''}.{a.name}".strip(".") for a in node.names} | {node.module or ""}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_the_fast_path_never_imports_the_reference():
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if str(rel) in ALLOWED or rel.parts[0] == "bench":  # the bench compares against the reference
            continue
        checked += 1
        imports = module_level_imports(path)
        assert not any(name.endswith("reference") or ".reference." in name for name in imports), (rel, imports)
    assert checked >= 12


def test_conv_svd_is_the_one_name_and_svd_a_deprecated_alias():
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with pytest.warns(FutureWarning, match="conv_svd"):
        old = cs.svd(w, (5, 4))
    new = cs.conv_svd(w, (5, 4))
    assert all(torch.equal(a, b) for a, b in zip(old, new))
    assert "svd" not in cs.__all__ and "conv_svd" in cs.__all__
    assert "conv_svd" in cs.reference.__all__ and "svd" not in cs.reference.__all__
