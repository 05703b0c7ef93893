"""Sweep specifications: a TOML file, validated on load.

A spec names a problem family and preset, the preset parameters to hold fixed
and the axes to sweep (a grid: the Cartesian product of the axes' values, first
axis slowest), the Monte-Carlo trials per point, the solvers to compare (each
with options and a unique label), the metrics to record and the plots to draw::

    name = "smoke"
    description = "one line"
    notes = "markdown for the report, e.g. the paper's published numbers"
    problem = "crlb-sumrate"
    preset = "small"
    seed = 2026                 # root of every trial seed
    trials = 4
    slots = 1                   # optional: trials as consecutive time slots (see SweepSpec.slots)
    metrics = ["sum_rate_nats", "crlb_trace"]   # evaluator keys; also "info.KEY" / "timings.KEY" of the Result

    [fixed]                     # preset keyword parameters held constant
    num_users = 2

    [[axes]]                    # preset keyword parameters swept
    name = "p_max_dbm"
    values = [0, 10, 20]
    label = "transmit power [dBm]"

    [[solvers]]
    name = "zf"
    label = "ZF 50%"            # optional; defaults to name; must be unique
    options = { comm_power_fraction = 0.5 }
    timeout_s = 60              # optional: per-solve time limit; a solve that exceeds it is stopped
                                # and stored with status TIMEOUT (the sweep goes on)

    [[plots]]
    name = "rate_vs_power"
    x = "p_max_dbm"
    y = "sum_rate_nats"
    ylog = false
    where = { }                 # pin other axes to one value, e.g. { num_users = 4 }

    [quick]                     # optional overrides for `isac reproduce --quick`
    trials = 2
    axes = { p_max_dbm = [0, 20] }

Every problem is reported as one line that names the offending key, e.g.
``spec smoke.toml: solvers[1].options.comm_power_fraction: ...``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Scalar = float | int | str | bool | list[int] | list[float]


class SpecError(ValueError):
    """A sweep spec that does not load or does not validate; one-line message naming the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Axis(_Model):
    """One swept preset parameter."""

    name: str
    values: list[Scalar] = Field(min_length=1)
    label: str | None = None


class SolverEntry(_Model):
    """One solver to compare; ``label`` identifies it in the store and the plots."""

    name: str
    label: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    where: dict[str, list[Scalar]] = Field(default_factory=dict)
    """Run this solver only at points whose axis values are in these lists (e.g. an SDR only for small N_t)."""
    requires: Literal["llm-endpoint"] | None = None
    """``"llm-endpoint"``: an LLM line, run only when an endpoint is configured ($ISAC_LLM_BASE_URL and
    $ISAC_LLM_MODEL, or ``isac reproduce --llm-base-url/--llm-model``); skipped with a message otherwise."""
    timeout_s: float | None = None
    """Wall-time limit of one solve in seconds: each solve of this entry then runs in a separate
    process that is killed when the limit passes, and the row is stored with status ``TIMEOUT``
    (see :mod:`isac.experiments.isolate`). Unset: solves run in the worker itself, unlimited.
    When set it is part of the compute hash: every row of a store ran under the same limits."""

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _positive_seconds(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"must be a positive finite number of seconds, got {v!r}")
        return float(v)

    @property
    def key(self) -> str:
        return self.label or self.name

    def runs_at(self, point: dict[str, Any]) -> bool:
        return all(point.get(k) in v for k, v in self.where.items())


class Plot(_Model):
    """One figure: ``y`` (a recorded metric, or ``time_s``/``iterations``) against axis ``x``, a line per solver."""

    name: str
    x: str
    y: str
    kind: Literal["line", "trace", "tradeoff", "series"] = "line"
    """``line``: mean of y against axis x; ``trace``: mean objective against iteration (needs
    ``record_trace = true``), one line per solver and value of x; ``tradeoff``: metric y
    against metric x (each point the statistic over trials at one grid point), one curve per
    solver through the grid points in axis order (e.g. 003 Fig. 3's trade-off region);
    ``series``: a list-valued metric y against a list-valued metric x (element-wise mean over
    trials), one curve per solver, e.g. the beampattern against the grid angles (004 Figs. 6-7)."""
    stat: Literal["mean", "median"] = "mean"
    """``mean`` with a 95 % Student-t interval, or ``median`` with the interquartile range."""
    title: str | None = None
    xlabel: str | None = None
    ylabel: str | None = None
    xlog: bool = False
    ylog: bool = False
    where: dict[str, Scalar] = Field(default_factory=dict)
    include: Literal["all", "feasible"] = "all"
    relative_to: str | None = None
    """A solver label: plot ``y / y_ref - 1`` of each row against the row of that solver on the same
    instance (same point and trial), e.g. every method's gap to a certified optimum. Rows where
    either value is missing (or, with ``include = "feasible"``, infeasible) are dropped."""

    @field_validator("name")
    @classmethod
    def _file_safe(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ \t\n"):
            raise ValueError("must be a non-empty file name without spaces or slashes")
        return v


class Quick(_Model):
    """Overrides applied by ``isac reproduce --quick``."""

    trials: int | None = Field(default=None, ge=1)
    axes: dict[str, list[Scalar]] = Field(default_factory=dict)
    solver_where: dict[str, dict[str, list[Scalar]]] = Field(default_factory=dict)
    """Per solver label: a ``where`` that replaces the solver's own in quick mode."""


class SweepSpec(_Model):
    name: str
    description: str = ""
    notes: str = ""
    problem: str
    preset: str
    seed: int = Field(ge=0)
    trials: int = Field(ge=1)
    slots: int = Field(default=1, ge=1)
    """Trials as time slots: trial ``t`` is slot ``t % slots`` of trajectory ``t // slots``. The
    trajectory's seed is the trial seed of index ``t // slots`` and the preset receives
    ``slot = t % slots`` (it must have a ``slot`` parameter, e.g. ``zhao-dynamic``). 1: i.i.d.
    trials, no ``slot`` passed."""
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    axes: list[Axis] = Field(default_factory=list)
    solvers: list[SolverEntry] = Field(min_length=1)
    metrics: list[str] = Field(min_length=1)
    record_trace: bool = False
    """Store each result's per-iteration objective (metric ``trace_objective``)."""
    plots: list[Plot] = Field(default_factory=list)
    quick: Quick | None = None

    # --- derived ---------------------------------------------------------------
    def points(self) -> list[dict[str, Any]]:
        """Grid points in order: dicts of the swept parameters (fixed ones excluded)."""
        names = [a.name for a in self.axes]
        return [dict(zip(names, combo)) for combo in itertools.product(*(a.values for a in self.axes))]

    def preset_kwargs(self, point: dict[str, Any]) -> dict[str, Any]:
        kw = dict(self.fixed)
        kw.update(point)
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}

    def total_rows(self) -> int:
        """Rows a complete run stores: (point, trial, solver) for every solver that runs at the point."""
        return self.trials * sum(1 for pt in self.points() for s in self.solvers if s.runs_at(pt))

    def solver_keys(self) -> list[str]:
        return [s.key for s in self.solvers]

    def compute_dict(self) -> dict[str, Any]:
        """The part of the spec that determines the numbers (plots and text excluded)."""
        d = self.model_dump(include={"problem", "preset", "seed", "trials", "fixed", "axes", "solvers", "metrics",
                                     "record_trace"})
        for a in d["axes"]:
            a.pop("label", None)
        for s in d["solvers"]:
            if s.get("timeout_s") is None:  # only when set, so that the hashes of existing specs do not change
                s.pop("timeout_s", None)
        if self.slots > 1:  # only then, so that the hashes of existing i.i.d. specs do not change
            d["slots"] = self.slots
        return d

    def trial_slot(self, trial: int) -> tuple[int, int | None]:
        """(index of the trial seed to use, slot passed to the preset or None) of trial ``trial``."""
        if self.slots == 1:
            return trial, None
        return trial // self.slots, trial % self.slots

    def compute_hash(self) -> str:
        text = json.dumps(self.compute_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_mode(self, mode: str) -> SweepSpec:
        """The spec as run by ``reproduce --quick`` (``mode="quick"``) or unchanged (``"full"``)."""
        if mode == "full" or self.quick is None:
            return self
        q = self.quick
        axes = [Axis(name=a.name, values=q.axes.get(a.name, a.values), label=a.label) for a in self.axes]
        solvers = [s.model_copy(update={"where": q.solver_where[s.key]}) if s.key in q.solver_where else s
                   for s in self.solvers]
        return self.model_copy(update={"trials": q.trials or self.trials, "axes": axes, "solvers": solvers})


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _check_semantics(spec: SweepSpec) -> None:
    """Cross-field checks against the registries (problem, preset, solvers, options)."""
    from isac.scenario.io import InstanceError
    from isac.scenario.problems import get_family, preset_parameters
    from isac.solvers.base import OptionError
    from isac.solvers.registry import solvers_for

    try:
        get_family(spec.problem)
    except InstanceError as e:
        raise SpecError(f"problem: {e}") from None
    try:
        params = preset_parameters(spec.problem, spec.preset)
    except InstanceError as e:
        raise SpecError(f"preset: {e}") from None
    axis_names = [a.name for a in spec.axes]
    if len(set(axis_names)) != len(axis_names):
        raise SpecError("axes: an axis name appears twice")
    for where, names in (("fixed", list(spec.fixed)), ("axes", axis_names)):
        for n in names:
            if n not in params:
                raise SpecError(
                    f"{where}.{n}: preset {spec.preset!r} has no parameter {n!r} "
                    f"(parameters: {', '.join(sorted(params)) or 'none'})"
                )
    if spec.slots > 1:
        if "slot" not in params:
            raise SpecError(f"slots: preset {spec.preset!r} has no parameter 'slot' (it draws i.i.d. instances only)")
        if "slot" in spec.fixed or "slot" in axis_names:
            raise SpecError("slots: 'slot' is set by the runner; do not fix it or sweep it")
    both = set(spec.fixed) & set(axis_names)
    if both:
        raise SpecError(f"fixed.{sorted(both)[0]}: also swept as an axis")
    available = solvers_for(spec.problem)
    keys = spec.solver_keys()
    for i, s in enumerate(spec.solvers):
        for k in s.where:
            if k not in axis_names:
                raise SpecError(f"solvers[{i}].where.{k}: not an axis")
        if s.name not in available:
            raise SpecError(
                f"solvers[{i}].name: no solver {s.name!r} for {spec.problem} "
                f"(available: {', '.join(sorted(available)) or 'none'})"
            )
        try:
            available[s.name].from_options(s.options)
        except OptionError as e:
            raise SpecError(f"solvers[{i}].options: {e}") from None
        if keys.count(s.key) > 1:
            raise SpecError(f"solvers[{i}].label: {s.key!r} is used twice; give each entry a unique label")
    recorded = set(spec.metrics) | {"time_s", "iterations", "feasible"}  # feasible: every row has it
    plot_names = [p.name for p in spec.plots]
    for i, p in enumerate(spec.plots):
        if plot_names.count(p.name) > 1:
            raise SpecError(f"plots[{i}].name: {p.name!r} is used twice")
        if p.kind in ("tradeoff", "series"):
            if p.x not in recorded:
                raise SpecError(f"plots[{i}].x: {p.x!r} is not a recorded metric (a {p.kind} plot has metrics on both axes)")
        elif p.x not in axis_names:
            raise SpecError(f"plots[{i}].x: {p.x!r} is not an axis (axes: {', '.join(axis_names) or 'none'})")
        if p.relative_to is not None and (p.kind != "line" or p.relative_to not in keys):
            raise SpecError(f"plots[{i}].relative_to: needs kind = \"line\" and a solver label "
                            f"(labels: {', '.join(keys)})")
        if p.kind == "trace" and not spec.record_trace:
            raise SpecError(f"plots[{i}].kind: a trace plot needs record_trace = true")
        if p.y not in recorded and p.kind in ("line", "tradeoff", "series"):
            raise SpecError(f"plots[{i}].y: {p.y!r} is not a recorded metric (metrics: {', '.join(sorted(recorded))})")
        for k, v in p.where.items():
            ax = next((a for a in spec.axes if a.name == k), None)
            if ax is None or k == p.x:
                raise SpecError(f"plots[{i}].where.{k}: not one of the other axes")
            if v not in ax.values:
                raise SpecError(f"plots[{i}].where.{k}: {v!r} is not among the axis values")
    if spec.quick is not None:
        for k in spec.quick.axes:
            if k not in axis_names:
                raise SpecError(f"quick.axes.{k}: not an axis")
        for k, where in spec.quick.solver_where.items():
            if k not in keys:
                raise SpecError(f"quick.solver_where.{k}: not a solver label")
            for a in where:
                if a not in axis_names:
                    raise SpecError(f"quick.solver_where.{k}.{a}: not an axis")


def parse_spec(text: str, source: str = "spec", check_registry: bool = True) -> SweepSpec:
    """Parse and validate TOML text; raises :class:`SpecError` with a one-line message.

    ``check_registry=False`` skips the checks against the installed problems and
    solvers (used to read a store whose solvers are not installed here).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{source}: invalid TOML: {str(e).splitlines()[0]}") from None
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].replace("\n", " ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise SpecError(f"{source}: {_loc(tuple(err['loc']))}: {msg}") from None
    try:
        if check_registry:
            _check_semantics(spec)
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None
    return spec


def load_spec(path: str | Path) -> tuple[SweepSpec, str]:
    """Read and validate a spec file; returns the spec and its text."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec {str(p)!r}: no such file")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise SpecError(f"spec {str(p)!r}: not a UTF-8 text file") from None
    return parse_spec(text, f"spec {p.name}"), text
