"""Build-time metadata of the convspectra wheel: the torch it is compiled against.

The compiled library uses torch's C++ API, whose ABI changes between minor
releases, so a wheel must only install beside the torch minor version it was
built with. scikit-build-core calls ``dynamic_metadata`` (pyproject.toml,
``[tool.scikit-build.metadata]``) in the interpreter that runs the build:

- ``dependencies``: the static list, plus ``torch==<major>.<minor>.*`` of the
  torch in that interpreter, so pip refuses any other torch;
- ``version``: the ``base`` setting, with a local label ``+cuXY`` when that
  torch is a CUDA build (the library then links torch's CUDA libraries and needs
  a CUDA torch of the same CUDA major), as torchvision labels its CUDA wheels.

Without torch in that interpreter (pip's default isolated build) the build
stops here with one line that says what to run.
"""

from __future__ import annotations

import re

NO_TORCH = ("convspectra compiles against the torch you will run it with: install torch first, then run "
            "`pip install --no-build-isolation .` (or `make wheel`)")


def _torch():
    try:
        import torch
    except ImportError:
        raise SystemExit("error: " + NO_TORCH) from None
    return torch


def torch_requirement(torch_version: str) -> str:
    """'2.13.0+cpu' -> 'torch==2.13.*' (patch releases keep the C++ ABI)."""
    match = re.match(r"(\d+)\.(\d+)", torch_version)
    if not match:
        raise SystemExit(f"error: cannot read a version from torch.__version__ = {torch_version!r}")
    return f"torch=={match.group(1)}.{match.group(2)}.*"


def cuda_label(cuda_version: str | None) -> str:
    """'13.0' -> '+cu130', None (a CPU torch) -> ''."""
    if not cuda_version:
        return ""
    major, minor = cuda_version.split(".")[:2]
    return f"+cu{major}{minor}"


def dynamic_metadata(field: str, settings: dict) -> str | list[str]:
    torch = _torch()
    if field == "dependencies":
        return [*settings.get("static", []), torch_requirement(torch.__version__)]
    if field == "version":
        return settings["base"] + cuda_label(torch.version.cuda)
    raise ValueError(f"torch_pin provides 'dependencies' and 'version', not {field!r}")
