"""Which solvers exist for which problem family."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from isac.solvers.base import OptionError, Solver

# (problem, name) -> class: the same name (e.g. "zf") may mean different
# constructions for different problem families.
_SOLVERS: dict[tuple[str, str], type[Solver]] = {}

SOLVER_INDEX: dict[str, dict[str, str]] = {
    "crlb-sumrate": {"mrt": "isac.solvers.baselines", "zf": "isac.solvers.baselines", "sca": "isac.solvers.fang_sca",
                     "sca-lowdim": "isac.solvers.fang_sca", "wmmse-sdr": "isac.solvers.fang_sdr"},
    "beampattern-sinr": {"mrt": "isac.solvers.beampattern_baselines", "zf": "isac.solvers.beampattern_baselines",
                         "sdr": "isac.solvers.zhao_sdr", "gnn": "isac.solvers.zhao_learned",
                         "gnn-ip": "isac.solvers.zhao_learned", "dnn": "isac.solvers.zhao_learned",
                         "gnn-fl": "isac.solvers.zhao_learned"},
    "multibs-association": {"ao": "isac.solvers.li_ao"},
    "bs-selection": {"exhaustive": "isac.solvers.xu", "scheme1": "isac.solvers.xu", "scheme2": "isac.solvers.xu",
                     "scheme3": "isac.solvers.xu", "penalty-sdr": "isac.solvers.xu_penalty"},
    "coop-localization": {"pdpg": "isac.solvers.lian_pdpg", "sca-sdr": "isac.solvers.lian_sca",
                          **{k: "isac.solvers.lian_learned" for k in ("lhgnn", "lhgnn-noatt", "homognn", "cnn",
                                                                      "lhgnn-rzf")}},
}
"""Which module registers each bundled solver, so that a solve imports only the module it needs (the
SDR solvers import cvxpy, ~1.4 s; the learned ones their networks). A test checks this table against
what the modules register."""

DEFAULT_SOLVERS: dict[str, str] = {"crlb-sumrate": "sca", "beampattern-sinr": "zf", "multibs-association": "ao",
                                   "bs-selection": "exhaustive", "coop-localization": "pdpg"}
"""``isac solve PROBLEM`` without ``--solver`` (the modules also call :func:`set_default_solver`)."""

_SOLVER_MODULES = tuple(dict.fromkeys(m for names in SOLVER_INDEX.values() for m in names.values()))


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
    """Solvers registered for ``problem``, by name (imports the modules of that problem only)."""
    for m in dict.fromkeys(SOLVER_INDEX.get(problem, {}).values()):
        importlib.import_module(m)
    return {n: c for (p, n), c in _SOLVERS.items() if p == problem}


def get_solver(problem: str, name: str, options: Mapping[str, Any] | None = None) -> Solver:
    """Instantiate solver ``name`` for ``problem`` with ``options`` (strings are parsed).

    Imports only the module that registers it when :data:`SOLVER_INDEX` knows it (an unknown name
    imports the problem's modules, to list what exists)."""
    module = SOLVER_INDEX.get(problem, {}).get(name)
    if module is not None:
        importlib.import_module(module)
    cls = _SOLVERS.get((problem, name))
    if cls is None:
        avail = solvers_for(problem)
        raise OptionError(f"unknown solver {name!r} for {problem} (available: {', '.join(sorted(avail)) or 'none'})")
    return cls.from_options(options or {})


_DEFAULTS: dict[str, str] = {}


def set_default_solver(problem: str, name: str) -> None:
    """Make ``name`` the solver ``isac solve PROBLEM`` uses when none is given."""
    _DEFAULTS[problem] = name


def default_solver(problem: str) -> str:
    if problem in _DEFAULTS and (problem, _DEFAULTS[problem]) in _SOLVERS:
        return _DEFAULTS[problem]
    if problem in DEFAULT_SOLVERS and problem not in _DEFAULTS:
        return DEFAULT_SOLVERS[problem]
    avail = solvers_for(problem)
    if not avail:
        raise OptionError(f"no solver is registered for {problem}")
    return sorted(avail)[0]
