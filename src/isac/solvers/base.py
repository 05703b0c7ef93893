"""The solver contract.

A solver is a dataclass of typed options with ``solve(instance) -> Result``.
Class attributes declare its registry name and the problems it supports.
The Result's metrics and feasibility are computed by :mod:`isac.metrics.evaluate`
(never by the solver's own bookkeeping), and :func:`finalize` refuses to label
an infeasible point CONVERGED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from isac.metrics.evaluate import evaluate, nonfinite_metrics, to_python
from isac.scenario.problems import get_family


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with torch on ``n`` threads, then restore the caller's setting."""
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def one_thread():
    """Run the block with torch on one thread, then restore the caller's setting.

    Small dense problems (a few tens of antennas) only slow down in torch's thread pool,
    by up to 100x when anything else runs on the machine.
    """
    return torch_threads(1)


class Status(str, enum.Enum):
    """Why a solver stopped."""

    CONVERGED = "CONVERGED"
    """Stopping rule met at a feasible point (closed-form methods: always, if feasible)."""
    MAX_ITERATIONS = "MAX_ITERATIONS"
    """Iteration budget exhausted; the point is feasible but the stopping rule was not met."""
    INFEASIBLE = "INFEASIBLE"
    """The problem (or the method's construction) admits no feasible point, or the returned point violates a constraint."""
    NUMERICAL_ERROR = "NUMERICAL_ERROR"
    """NaN/Inf, a failed factorisation or an inner solver error."""
    TIMEOUT = "TIMEOUT"
    """The solve ran past its time limit (a sweep spec's ``timeout_s``) and was stopped; no point returned."""


@dataclass
class Result:
    """Outcome of one ``solve``.

    Attributes:
        problem, solver: names as registered.
        status, message: :class:`Status` and a one-line human explanation.
        solution: tensors of the solution (e.g. ``{"W": [Nt, K+Ns]}``; association/selection
            where the problem has them).
        metrics: from :func:`isac.metrics.evaluate.evaluate`; always has ``feasible``.
        trace: one dict per iteration (e.g. objective), possibly empty.
        iterations: number of iterations run.
        time_s: wall time of the solve (excluding one-time model loading).
        timings: finer wall-time breakdown in seconds.
        options: the solver options used.
        seed: the seed the solver used for its own randomness (None if it has none).
        info: facts about how the solver ran that are not quality metrics (e.g.
            ``{"projected": True}`` when a learned solver's output needed its projection).
            Sweeps record them as metrics named ``info.KEY`` (and ``timings.KEY``).
    """

    problem: str
    solver: str
    status: Status
    message: str
    solution: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, float]] = field(default_factory=list)
    iterations: int = 0
    time_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return bool(self.metrics.get("feasible", False))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the solution in the family's file format plus everything else."""
        fam = get_family(self.problem)
        out: dict[str, Any] = {"problem": self.problem, "solver": self.solver}
        # A point holding NaN/Inf is not written (its status is NUMERICAL_ERROR, see finalize), and
        # non-finite numbers elsewhere become null: the dict always encodes as strict JSON.
        out.update(fam.encode_solution(self.solution) if self.solution and not nonfinite_metrics(self.solution) else {})
        out.update(
            {
                "status": self.status.value,
                "message": self.message,
                "metrics": _json_safe(to_python(self.metrics)),
                "iterations": int(self.iterations),
                "time_s": float(self.time_s),
                "timings": _json_safe({k: float(v) for k, v in self.timings.items()}),
                "trace": _json_safe(to_python(self.trace)),
                "options": _json_safe(to_python(self.options)),
                "seed": self.seed,
                "info": _json_safe(to_python(self.info)),
            }
        )
        return out


def _json_safe(x: Any) -> Any:
    """``x`` with every NaN / infinite float replaced by None (JSON null), recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


class OptionError(ValueError):
    """A solver option that does not exist or does not parse; one-line message."""


class Solver:
    """Base class for solver dataclasses.

    Subclasses are ``@dataclass`` with typed option fields and define
    ``name``, ``problems`` and ``_solve(instance) -> (status, message, solution, trace, iterations)``.
    Inside ``_solve``, :meth:`record` attaches finer timings and solver facts to the Result.
    """

    name: ClassVar[str] = ""
    problems: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def _solve(self, instance) -> tuple[Status, str, dict[str, torch.Tensor], list[dict[str, float]], int]:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's own ``solve_batch`` runs on one torch thread too (the caller's setting is restored),
        unless the class marks it ``solve_batch._one_thread = True`` and sets the threads itself (e.g. one
        large batched forward pass on the caller's threads, the small per-instance work on one)."""
        super().__init_subclass__(**kwargs)
        batch = cls.__dict__.get("solve_batch")
        if batch is not None and not getattr(batch, "_one_thread", False):
            @functools.wraps(batch)
            def solve_batch(self, instances, *args, **kw):
                with one_thread():
                    return batch(self, instances, *args, **kw)

            solve_batch._one_thread = True  # type: ignore[attr-defined]
            cls.solve_batch = solve_batch  # type: ignore[attr-defined]

    def record(self, *, timings: Mapping[str, float] | None = None, info: Mapping[str, Any] | None = None) -> None:
        """From inside ``_solve``: timings (seconds) and facts to add to this solve's Result."""
        self._recorded[0].update(timings or {})
        self._recorded[1].update(info or {})

    def solve(self, instance) -> Result:
        if instance.problem not in self.problems:
            raise OptionError(f"solver {self.name!r} does not solve {instance.problem!r} (it solves: {', '.join(self.problems)})")
        self._recorded: tuple[dict[str, float], dict[str, Any]] = ({}, {})
        t0 = time.perf_counter()
        try:
            with one_thread():  # small dense problems: torch's thread pool only slows them down
                status, message, solution, trace, iterations = self._solve(instance)
        except (torch.linalg.LinAlgError, FloatingPointError, OverflowError) as e:
            status, message, solution, trace, iterations = Status.NUMERICAL_ERROR, f"{type(e).__name__}: {e}".splitlines()[0], {}, [], 0
        elapsed = time.perf_counter() - t0
        return finalize(
            Result(
                problem=instance.problem,
                solver=self.name,
                status=status,
                message=message,
                solution=solution,
                trace=trace,
                iterations=iterations,
                time_s=elapsed,
                timings={"solve_s": elapsed, **self._recorded[0]},
                options=self.options(),
                seed=getattr(self, "seed", None),
                info=dict(self._recorded[1]),
            ),
            instance,
        )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Solver:
        """Build from ``{"name": value}``; string values (from the CLI) are parsed by field type."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in options.items():
            if key not in fields:
                raise OptionError(
                    f"solver {cls.name!r} has no option {key!r} (options: {', '.join(sorted(fields)) or 'none'})"
                )
            kwargs[key] = _parse_option(cls.name, key, value, hints[key])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise OptionError(f"solver {cls.name!r}: {e}") from None


def _parse_option(solver: str, key: str, value: Any, hint: Any) -> Any:
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    target = args[0] if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args else hint
    try:
        if target is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if target is int:
            return int(value)
        if target is float:
            return float(value)
        if typing.get_origin(target) is typing.Literal:
            allowed = typing.get_args(target)
            if value not in allowed:
                raise ValueError(value)
            return value
        return target(value) if callable(target) else value
    except (TypeError, ValueError):
        raise OptionError(f"solver {solver!r}: option {key}={value!r} is not a valid {getattr(target, '__name__', target)}") from None


def finalize(result: Result, instance) -> Result:
    """Attach metrics from the metrics package and enforce the status rules.

    A point the metrics package finds infeasible is never CONVERGED or
    MAX_ITERATIONS: it becomes INFEASIBLE with the reason appended. A point holding
    NaN/Inf, or whose metrics do (a finite input that overflows float64 inside a
    metric), is NUMERICAL_ERROR whatever the solver said, with the offending names
    appended; :meth:`Result.to_dict` then writes null for those numbers.
    """
    if result.solution:
        result.metrics = evaluate(instance, result.solution)
    else:
        result.metrics = {"feasible": False}
    bad_point = nonfinite_metrics(result.solution) if result.solution else []
    bad_metrics = nonfinite_metrics(result.metrics)
    if (bad_point or bad_metrics) and result.status in (Status.CONVERGED, Status.MAX_ITERATIONS, Status.INFEASIBLE,
                                                        Status.NUMERICAL_ERROR):
        what = (f"returned point has NaN or Inf in {', '.join(bad_point)}" if bad_point else
                f"non-finite metrics {', '.join(bad_metrics[:4])}{' ...' if len(bad_metrics) > 4 else ''} "
                "(e.g. a sensing bound of beams that see no target, or values beyond float64's range)")
        result.message = f"{result.message}; {what}".lstrip("; ")
        result.status = Status.NUMERICAL_ERROR
        result.metrics["feasible"] = False
    elif result.status in (Status.CONVERGED, Status.MAX_ITERATIONS) and not result.metrics.get("feasible", False):
        why = result.metrics.get("error") or "the metrics package found a constraint violated"
        result.message = f"{result.message}; returned point is infeasible: {why}".lstrip("; ")
        result.status = Status.INFEASIBLE
    return result
