"""The project cites only itself: every `docs/math.md §N` (or §N.M) in the code,
tests, bench scripts and docs names a heading of docs/math.md, and no file
points at a spec outside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for pattern in ("python/**/*.py", "tests/*.py", "bench/*.py", "bench/*.md", "scripts/*", "csrc/**/*.h",
                             "csrc/**/*.cpp", "csrc/**/*.cu", "csrc/**/*.cuh", "docs/*.md", "examples/*.py", "*.md")
           for p in ROOT.glob(pattern) if p.is_file()]


def math_sections() -> set[str]:
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", (ROOT / "docs/math.md").read_text(), re.M)
    return set(headings)


def test_every_math_citation_names_a_heading():
    sections = math_sections()
    assert {"1", "2", "3.2", "4.2", "5.1", "6.2", "7", "11.3"} <= sections
    cited = 0
    for path in SOURCES:
        text = path.read_text(errors="replace")
        # "docs/math.md §4.2 (a)-(c)", "docs/math.md §2, §3", "math.md §4.3-§4.8", "§4.2, §11"
        for match in re.finditer(r"math\.md((?:[ ,\-and]*§\d+(?:\.\d+)?(?: \([a-d]\)(?:-\([a-d]\))?)?)+)", text):
            for number in re.findall(r"§(\d+(?:\.\d+)?)", match.group(1)):
                cited += 1
                assert number in sections, f"{path.relative_to(ROOT)} cites docs/math.md §{number}, which has no heading"
    assert cited >= 20  # the code does cite it


def test_nothing_cites_a_document_outside_the_repository():
    this = Path(__file__).resolve()
    for path in SOURCES:
        if path == this:
            continue
        text = path.read_text(errors="replace")
        for name in ("MATH.md", "BENCH.md", "DESIGN.md", "shared/spec"):
            assert name not in text, f"{path.relative_to(ROOT)} mentions {name}"
