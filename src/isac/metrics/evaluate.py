"""Per-problem evaluation: the metrics and feasibility of a solution.

Every number a Result or ``isac evaluate`` reports comes from here, so solvers,
training losses and evaluation share one implementation. Each family registers
an evaluator ``f(instance, solution) -> dict`` whose dict has at least
``feasible`` (bool) and ``power_w``; tensors are returned as Python floats/lists.

Feasibility tolerances are named constants, not literals scattered in solvers.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from isac.tensors import is_finite

POWER_RTOL = 1e-6
"""A power budget counts as met when ``power <= budget * (1 + POWER_RTOL)``."""

SINR_RTOL = 1e-6
"""An SINR target counts as met when ``sinr >= target * (1 - SINR_RTOL)``."""

Evaluator = Callable[[Any, Mapping[str, torch.Tensor]], dict[str, Any]]
_EVALUATORS: dict[str, Evaluator] = {}

_EVALUATOR_MODULES = (
    "isac.metrics.problems.crlb_sumrate",
    "isac.metrics.problems.beampattern_sinr",
    "isac.metrics.problems.multibs_association",
    "isac.metrics.problems.bs_selection",
    "isac.metrics.problems.coop_localization",
)


def register_evaluator(problem: str):
    def deco(fn: Evaluator) -> Evaluator:
        _EVALUATORS[problem] = fn
        return fn

    return deco


def evaluate(instance, solution: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Metrics of ``solution`` on ``instance`` (see the family's evaluator for keys)."""
    for m in _EVALUATOR_MODULES:
        importlib.import_module(m)
    fn = _EVALUATORS.get(instance.problem)
    if fn is None:
        raise KeyError(f"no evaluator registered for problem {instance.problem!r}")
    for k, v in solution.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() or isinstance(v, torch.Tensor) and v.is_complex():
            if not is_finite(v):
                return {"feasible": False, "error": f"{k} contains NaN or Inf"}
    return fn(instance, solution)


def nonfinite_metrics(metrics: Mapping[str, Any]) -> list[str]:
    """Names of the entries holding a NaN or an infinity (``"rates_nats[1]"``, ``"crlb_trace"``), in order:
    of a metrics dict, or of a solution's tensors (``"W"``).

    A finite input can still overflow inside a metric; :func:`isac.solvers.base.finalize` turns such
    a result into NUMERICAL_ERROR and ``isac evaluate`` refuses to print it."""
    bad: list[str] = []

    def walk(x: Any, name: str) -> None:
        if isinstance(x, torch.Tensor):
            if (x.is_floating_point() or x.is_complex()) and not is_finite(x):
                bad.append(name)
        elif isinstance(x, float):
            if not math.isfinite(x):
                bad.append(name)
        elif isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                if len(bad) < 8:
                    walk(v, f"{name}[{i}]")

    walk(metrics, "")
    return bad


def to_python(x: Any) -> Any:
    """Tensors -> floats/lists, recursively (for JSON)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist() if x.ndim else float(x.detach().cpu())
    if isinstance(x, dict):
        return {k: to_python(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_python(v) for v in x]
    return x
