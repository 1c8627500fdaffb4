"""Every benchmark case, in the order of the table, and the selection of the
command line (--quick, --filter, --family)."""

from __future__ import annotations

from .case import Case
from .export_cases import export_cases
from .isa_cases import isa_cases
from .layer_cases import layer_benchmark_cases
from .norm_cases import gram_kernel_cases, norm_cases, penalty_cases
from .orthogonal_cases import bcop_cases, cayley_cases
from .spectrum_cases import grid_cases, resnet18_cases, small_svd_cases


def all_cases() -> list[Case]:
    """Every case of the full run, in table order."""
    return (grid_cases() + resnet18_cases() + norm_cases() + penalty_cases() + gram_kernel_cases()
            + small_svd_cases() + cayley_cases() + bcop_cases() + export_cases() + layer_benchmark_cases()
            + isa_cases())


def select_cases(cases: list[Case], quick: bool = False, name: str | None = None,
                 family: str | None = None) -> list[Case]:
    """The cases a run measures, in their order: only those marked quick if
    ``quick``; only those whose name or shape contains ``name`` (case-sensitive);
    only those whose family contains ``family`` (case-insensitive)."""
    selected = [c for c in cases if c.quick or not quick]
    if name:
        selected = [c for c in selected if name in c.name or name in c.shape]
    if family:
        selected = [c for c in selected if family.lower() in c.family.lower()]
    return selected
