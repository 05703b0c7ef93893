"""Which solvers exist for which problem family."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from isac.solvers.base import OptionError, Solver

# (problem, name) -> class: the same name (e.g. "zf") may mean different
# constructions for different problem families.
_SOLVERS: dict[tuple[str, str], type[Solver]] = {}

_SOLVER_MODULES = (
    "isac.solvers.baselines",
    "isac.solvers.beampattern_baselines",
    "isac.solvers.fang_sca",
    "isac.solvers.fang_sdr",
    "isac.solvers.zhao_sdr",
    "isac.solvers.zhao_learned",
    "isac.solvers.li_ao",
    "isac.solvers.xu",
    "isac.solvers.xu_penalty",
    "isac.solvers.lian_sca",
    "isac.solvers.lian_pdpg",
    "isac.solvers.lian_learned",
)


def register_solver(cls: type[Solver]) -> type[Solver]:
    if not cls.name or not cls.problems:
        raise ValueError(f"{cls.__name__} has no name or no problems")
    for problem in cls.problems:
        key = (problem, cls.name)
        if key in _SOLVERS and _SOLVERS[key] is not cls:
            raise ValueError(f"solver {cls.name!r} for {problem} registered twice")
        _SOLVERS[key] = cls
    return cls


def _load() -> None:
    for m in _SOLVER_MODULES:
        importlib.import_module(m)


def all_solvers() -> dict[tuple[str, str], type[Solver]]:
    """Every registered solver, keyed by ``(problem, name)``."""
    _load()
    return dict(_SOLVERS)


def solvers_for(problem: str) -> dict[str, type[Solver]]:
    """Solvers registered for ``problem``, by name."""
    return {n: c for (p, n), c in all_solvers().items() if p == problem}


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
