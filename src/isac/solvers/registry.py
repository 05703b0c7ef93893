"""Which solvers exist for which problem family."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from isac.solvers.base import OptionError, Solver

_SOLVERS: dict[str, type[Solver]] = {}

_SOLVER_MODULES = (
    "isac.solvers.baselines",
)


def register_solver(cls: type[Solver]) -> type[Solver]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _SOLVERS[cls.name] = cls
    return cls


def _load() -> None:
    for m in _SOLVER_MODULES:
        importlib.import_module(m)


def all_solvers() -> dict[str, type[Solver]]:
    _load()
    return dict(_SOLVERS)


def solvers_for(problem: str) -> dict[str, type[Solver]]:
    """Solvers registered for ``problem``, by name."""
    return {n: c for n, c in all_solvers().items() if problem in c.problems}


def get_solver(problem: str, name: str, options: Mapping[str, Any] | None = None) -> Solver:
    """Instantiate solver ``name`` for ``problem`` with ``options`` (strings are parsed)."""
    avail = solvers_for(problem)
    if name not in avail:
        raise OptionError(f"unknown solver {name!r} for {problem} (available: {', '.join(sorted(avail)) or 'none'})")
    return avail[name].from_options(options or {})


_DEFAULTS: dict[str, str] = {}


def set_default_solver(problem: str, name: str) -> None:
    """Make ``name`` the solver ``isac solve PROBLEM`` uses when none is given."""
    _DEFAULTS[problem] = name


def default_solver(problem: str) -> str:
    avail = solvers_for(problem)
    if problem in _DEFAULTS and _DEFAULTS[problem] in avail:
        return _DEFAULTS[problem]
    if not avail:
        raise OptionError(f"no solver is registered for {problem}")
    return sorted(avail)[0]
