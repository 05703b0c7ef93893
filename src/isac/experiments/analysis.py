"""Tables, plots and markdown reports from a result store.

Aggregation: for each plot, rows are filtered by the plot's ``where`` (and by
feasibility when ``include = "feasible"``), rows whose metric is not a finite
number (failed trials) are left out and counted, and each (solver, x) cell gets
the mean over trials with a two-sided 95 % Student-t interval
(:math:`\\bar y \\pm t_{0.975,n-1}\\, s/\\sqrt n`; no interval when n = 1).
When an axis other than ``x`` is not pinned by ``where``, each of its values
gets its own line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isac.experiments.runner import FAILED_STATUSES
from isac.experiments.spec import Plot, SweepSpec
from isac.experiments.store import tidy_rows


@dataclass
class Cell:
    """One (series, x) aggregate."""

    series: str
    x: Any
    mean: float
    low: float
    high: float
    n: int
    dropped: int


def _value(row: Mapping[str, Any], y: str) -> float | None:
    v = row[y] if y in ("time_s", "iterations") else row["metrics"].get(y)
    if isinstance(v, bool):  # flags (feasible, projected) average to ratios
        return float(v)
    if not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the 95 % Student-t interval."""
    from scipy.stats import t as student_t

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = float(student_t.ppf(0.975, n - 1)) * math.sqrt(var / n)
    return mean, mean - half, mean + half


def median_iqr(values: Sequence[float]) -> tuple[float, float, float]:
    """Median and the 25th/75th percentiles (linear interpolation)."""
    import numpy as np

    q = np.percentile(np.asarray(values, dtype=float), [50.0, 25.0, 75.0])
    return float(q[0]), float(q[1]), float(q[2])


def aggregate(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, plot: Plot) -> list[Cell]:
    others = [a.name for a in spec.axes if a.name != plot.x and a.name not in plot.where]
    groups: dict[tuple[str, Any], list[float]] = defaultdict(list)
    dropped: dict[tuple[str, Any], int] = defaultdict(int)
    order = {s: i for i, s in enumerate(spec.solver_keys())}

    def usable(r) -> float | None:
        v = _value(r, plot.y)
        return None if v is None or (plot.include == "feasible" and not r["metrics"].get("feasible", False)) else v

    ref = ({(r["point"], r["trial"]): usable(r) for r in rows if r["solver"] == plot.relative_to}
           if plot.relative_to else {})
    for r in rows:
        params = r["params"]
        if not _in_plot(plot, params):
            continue
        series = r["solver"] + "".join(f", {k}={params.get(k)}" for k in others)
        key = (series, params.get(plot.x))
        v = usable(r)
        if v is not None and plot.relative_to:
            base = ref.get((r["point"], r["trial"]))
            v = None if not base else v / base - 1.0
        if v is None:
            dropped[key] += 1
            continue
        groups[key].append(v)
    keys = sorted(set(groups) | set(dropped),
                  key=lambda k: (order.get(k[0].split(",")[0], 99), k[0], _sort_x(k[1])))
    cells = []
    for k in keys:
        vals = groups.get(k, [])
        if vals and plot.stat == "median":
            m, lo, hi = median_iqr(vals)
        elif vals:
            m, lo, hi = mean_ci(vals)
        else:
            m = lo = hi = math.nan
        cells.append(Cell(k[0], k[1], m, lo, hi, len(vals), dropped.get(k, 0)))
    return cells


def _trajectory_text(trials: int, slots: int) -> str:
    """How the trials of a ``slots`` spec form trajectories, for the report ("" when i.i.d.)."""
    if slots <= 1:
        return ""
    full, rest = divmod(trials, slots)
    parts = [f"{full} trajector{'y' if full == 1 else 'ies'} of {slots} time slots"] if full else []
    if rest:
        parts.append(f"{'one' if full else '1 trajectory'} of {rest} time slot{'s' if rest > 1 else ''}")
    return " (" + " and ".join(parts) + ")"


def _sort_x(x: Any) -> tuple:
    return (0, float(x), "") if isinstance(x, (int, float)) and not isinstance(x, bool) else (1, 0.0, str(x))


def _in_plot(plot: Plot, params: Mapping[str, Any]) -> bool:
    """Whether a row's point satisfies the plot's ``where`` pins."""
    return all(params.get(k) == v for k, v in plot.where.items())


def _axes():
    """A fresh figure and axes on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.5, 3.8))


def _finish(fig, ax, plot: Plot, out_dir: Path, *, xlabel: str, ylabel: str, title: str, legend: bool,
            scale: str = "log", grid_which: str = "both", legend_size: int = 8) -> list[Path]:
    """Scales, labels, grid and legend, then write ``<plot.name>.png`` and ``.pdf`` and close the figure."""
    import matplotlib.pyplot as plt

    if plot.xlog:
        ax.set_xscale(scale)
    if plot.ylog:
        ax.set_yscale(scale)
    ax.set_xlabel(plot.xlabel or xlabel)
    ax.set_ylabel(plot.ylabel or ylabel)
    ax.set_title(plot.title or title, fontsize=10)
    ax.grid(True, alpha=0.3, which=grid_which)
    if legend:
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{plot.name}.png", out_dir / f"{plot.name}.pdf"]
    for f in files:
        fig.savefig(f, dpi=150)
    plt.close(fig)
    return files


def draw(cells: Sequence[Cell], spec: SweepSpec, plot: Plot, out_dir: Path) -> list[Path]:
    """Draw one plot as PNG and PDF; returns the files written."""
    axis = next(a for a in spec.axes if a.name == plot.x)
    fig, ax = _axes()
    series = list(dict.fromkeys(c.series for c in cells))
    numeric = all(isinstance(c.x, (int, float)) and not isinstance(c.x, bool) for c in cells)
    categories = list(dict.fromkeys(c.x for c in cells))
    for name in series:
        pts = [c for c in cells if c.series == name and c.n > 0]
        if not pts:
            continue
        xs = [c.x if numeric else categories.index(c.x) for c in pts]
        ys = [c.mean for c in pts]
        line, = ax.plot(xs, ys, marker="o", ms=4, label=name)
        if any(c.n > 1 for c in pts) or plot.stat == "median":
            ax.fill_between(xs, [c.low for c in pts], [c.high for c in pts], color=line.get_color(), alpha=0.2,
                            linewidth=0)
    if not numeric:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    return _finish(fig, ax, plot, out_dir, xlabel=axis.label or plot.x, ylabel=plot.y,
                   title=f"{spec.name}: {plot.y} vs {plot.x}", legend=bool(series))


def trace_curves(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, plot: Plot) -> dict[str, list[float]]:
    """Mean objective per iteration for each (solver, x value); shorter traces are held at their last value."""
    groups: dict[str, list[list[float]]] = defaultdict(list)
    for r in rows:
        params = r["params"]
        if not _in_plot(plot, params):
            continue
        tr = r["metrics"].get("trace_objective")
        if not tr or r["status"] in FAILED_STATUSES:
            continue
        groups[f"{r['solver']}, {plot.x}={params.get(plot.x)}"].append([float(v) for v in tr])
    out = {}
    for name, traces in groups.items():
        n = max(len(t) for t in traces)
        padded = [t + [t[-1]] * (n - len(t)) for t in traces]
        out[name] = [sum(col) / len(col) for col in zip(*padded)]
    return out


def draw_trace(curves: Mapping[str, list[float]], spec: SweepSpec, plot: Plot, out_dir: Path) -> list[Path]:
    fig, ax = _axes()
    for name, ys in curves.items():  # markers on short traces (a one-point trace is otherwise invisible)
        ax.plot(range(len(ys)), ys, label=name, marker="o" if len(ys) <= 30 else None, ms=4)
    longest = max((len(ys) for ys in curves.values()), default=0)
    if 0 < longest <= 30:  # few (outer) iterations: integer ticks, and room around a single point
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.5, max(longest - 1, 1) + 0.5)
    return _finish(fig, ax, plot, out_dir, xlabel="iteration", ylabel="objective (mean over trials)",
                   title=f"{spec.name}: convergence", legend=bool(curves), scale="symlog", grid_which="major",
                   legend_size=7)


def tradeoff_points(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, plot: Plot) -> dict[str, list[tuple]]:
    """Per solver: ``(point params, x statistic, y statistic, n)`` for each grid point, in grid order."""
    stat = median_iqr if plot.stat == "median" else mean_ci
    groups: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    params: dict[int, dict] = {}
    for r in rows:
        if not _in_plot(plot, r["params"]):
            continue
        if plot.include == "feasible" and not r["metrics"].get("feasible", False):
            continue
        x, y = _value(r, plot.x), _value(r, plot.y)
        if x is None or y is None:
            continue
        groups[(r["solver"], r["point"])].append((x, y))
        params[r["point"]] = r["params"]
    out: dict[str, list[tuple]] = {}
    for solver in spec.solver_keys():
        pts = sorted(p for (s, p) in groups if s == solver)
        out[solver] = [(params[p], stat([v[0] for v in groups[(solver, p)]])[0],
                        stat([v[1] for v in groups[(solver, p)]])[0], len(groups[(solver, p)])) for p in pts]
    return {k: v for k, v in out.items() if v}


def draw_tradeoff(curves: Mapping[str, list[tuple]], spec: SweepSpec, plot: Plot, out_dir: Path) -> list[Path]:
    fig, ax = _axes()
    for name, pts in curves.items():
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", ms=4, label=name)
    return _finish(fig, ax, plot, out_dir, xlabel=plot.x, ylabel=plot.y,
                   title=f"{spec.name}: {plot.y} vs {plot.x}", legend=bool(curves))


def series_curves(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, plot: Plot) -> dict[str, tuple[list, list, int]]:
    """Element-wise mean over trials of the list metric ``y`` against the list metric ``x``.

    One curve per solver (and per value of each axis not pinned by ``where``); rows whose
    lists are missing or differ in length from the curve's first row are skipped.
    """
    others = [a.name for a in spec.axes if a.name not in plot.where]
    groups: dict[str, list[list[float]]] = defaultdict(list)
    xs: dict[str, list[float]] = {}
    for r in rows:
        params = r["params"]
        if not _in_plot(plot, params) or r["status"] == "ERROR":
            continue
        if plot.include == "feasible" and not r["metrics"].get("feasible", False):
            continue
        x, y = r["metrics"].get(plot.x), r["metrics"].get(plot.y)
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y) or not y:
            continue
        name = r["solver"] + "".join(f", {k}={params.get(k)}" for k in others)
        if name in xs and len(xs[name]) != len(y):
            continue
        xs.setdefault(name, [float(v) for v in x])
        groups[name].append([float(v) for v in y])
    return {name: (xs[name], [sum(col) / len(col) for col in zip(*ys)], len(ys)) for name, ys in groups.items()}


def draw_series(curves: Mapping[str, tuple[list, list, int]], spec: SweepSpec, plot: Plot,
                out_dir: Path) -> list[Path]:
    fig, ax = _axes()
    for name, (xs, ys, _) in curves.items():
        ax.plot(xs, ys, label=name)
    return _finish(fig, ax, plot, out_dir, xlabel=plot.x, ylabel=f"{plot.y} (mean over trials)",
                   title=f"{spec.name}: {plot.y}", legend=bool(curves))


def plot_store(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    files: list[Path] = []
    for plot in spec.plots:
        files += render_plot(rows, spec, plot, out)[0]
    return files


def export(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, fmt: str) -> str:
    """Tidy rows as CSV or JSON text."""
    tidy = tidy_rows(rows, spec)
    if fmt == "json":
        return json.dumps(tidy, indent=1, default=str, allow_nan=True)
    if fmt != "csv":
        raise ValueError(f"--format must be csv or json, got {fmt!r}")
    buf = io.StringIO()
    cols = list(tidy[0]) if tidy else ["point", "trial", "seed", "solver", "status"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for rec in tidy:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in rec.items()})
    return buf.getvalue()


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:.4g}"


def _line_table(cells: Sequence[Cell], plot: Plot) -> list[str]:
    what = f"`{plot.y}` / `{plot.y}` of {plot.relative_to} - 1 (same instance)" if plot.relative_to else f"`{plot.y}`"
    lines = [(f"Median of {what} with interquartile range over trials" if plot.stat == "median" else
              f"Mean of {what} with 95 % interval over trials")
             + (f", where {', '.join(f'{k} = {v}' for k, v in plot.where.items())}" if plot.where else "")
             + (", feasible trials only" if plot.include == "feasible" else "") + ".", ""]
    xs = list(dict.fromkeys(c.x for c in sorted(cells, key=lambda c: _sort_x(c.x))))
    series = list(dict.fromkeys(c.series for c in cells))
    lines.append(f"| {plot.x} | " + " | ".join(series) + " |")
    lines.append("|---|" + "---|" * len(series))
    for x in xs:
        row = []
        for s in series:
            c = next((c for c in cells if c.series == s and c.x == x), None)
            if c is None or c.n == 0:
                row.append("–")
            else:
                txt = _fmt(c.mean) + (f" [{_fmt(c.low)}, {_fmt(c.high)}]" if c.n > 1 else "")
                row.append(txt + (f" ({c.dropped} dropped)" if c.dropped else ""))
        lines.append(f"| {x} | " + " | ".join(row) + " |")
    return lines


def _trace_table(curves: Mapping[str, list[float]], plot: Plot) -> list[str]:
    lines = ["| series | iterations (longest trace) | first objective | final objective |", "|---|---|---|---|"]
    for name, ys in curves.items():
        lines.append(f"| {name} | {len(ys) - 1} | {_fmt(ys[0])} | {_fmt(ys[-1])} |")
    return lines


def _tradeoff_table(pts: Mapping[str, list[tuple]], plot: Plot) -> list[str]:
    lines = [f"{plot.stat.capitalize()} over trials at each grid point.", "",
             f"| solver | point | {plot.x} | {plot.y} | trials |", "|---|---|---|---|---|"]
    for name, ps in pts.items():
        for prm, x, y, n in ps:
            lines.append(f"| {name} | {prm} | {_fmt(x)} | {_fmt(y)} | {n} |")
    return lines


def _series_table(curves: Mapping[str, tuple[list, list, int]], plot: Plot, max_rows: int = 19) -> list[str]:
    names = list(curves)
    if not names:
        return ["(no rows)"]
    xs = curves[names[0]][0]
    step = max(1, math.ceil(len(xs) / max_rows))
    lines = [f"Mean of `{plot.y}` over trials (" + ", ".join(f"{n}: {curves[n][2]} trials" for n in names)
             + f"), every {step}th value of `{plot.x}`.", "",
             f"| {plot.x} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i in range(0, len(xs), step):
        vals = [_fmt(curves[n][1][i]) if i < len(curves[n][1]) else "–" for n in names]
        lines.append(f"| {xs[i]:g} | " + " | ".join(vals) + " |")
    return lines


# kind -> (aggregate the rows, draw the figure, markdown table of the same numbers)
_KINDS = {
    "line": (aggregate, draw, _line_table),
    "trace": (trace_curves, draw_trace, _trace_table),
    "tradeoff": (tradeoff_points, draw_tradeoff, _tradeoff_table),
    "series": (series_curves, draw_series, _series_table),
}


def render_plot(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, plot: Plot,
                out_dir: Path) -> tuple[list[Path], list[str]]:
    """Draw one plot (PNG + PDF) and return the files and its markdown report section."""
    compute, drawer, table = _KINDS[plot.kind]
    data = compute(rows, spec, plot)
    files = drawer(data, spec, plot, out_dir)
    section = [f"## {plot.title or plot.name}", "", f"![{plot.name}]({plot.name}.png)", ""]
    return files, section + table(data, plot) + [""]


def report(rows: Sequence[Mapping[str, Any]], spec: SweepSpec, manifest: Mapping[str, str], out_dir: str | Path,
           extra: str = "") -> Path:
    """Write ``report.md`` (tables per plot, failure list, manifest) and the plots beside it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    total = spec.total_rows()
    failed = [r for r in rows if r["status"] in FAILED_STATUSES]
    lines += [
        f"Problem `{spec.problem}`, preset `{spec.preset}`, root seed {spec.seed}, {spec.trials} trials per point"
        + _trajectory_text(spec.trials, spec.slots)
        + f", {len(spec.points())} points, solvers: {', '.join(spec.solver_keys())}.",
        f"Rows stored: {len(rows)} of {total}; failed ({', '.join(FAILED_STATUSES)}): {len(failed)}.",
        "",
    ]
    if spec.notes:
        lines += [spec.notes.strip(), ""]
    if extra:
        lines += [extra.strip(), ""]
    for plot in spec.plots:
        lines += render_plot(rows, spec, plot, out)[1]
    if failed:
        lines += ["## Failed trials", "", "| point | trial | solver | status | message |", "|---|---|---|---|---|"]
        for r in failed[:50]:
            lines.append(f"| {r['params']} | {r['trial']} | {r['solver']} | {r['status']} | "
                         f"{str(r['message']).replace('|', '/')} |")
        if len(failed) > 50:
            lines.append(f"| ... {len(failed) - 50} more | | | | |")
        lines.append("")
    lines += ["## Manifest", ""]
    for k in ("spec_name", "spec_hash", "seed", "isac_version", "git_hash", "created", "libraries"):
        if manifest.get(k):
            lines.append(f"- {k}: `{manifest[k]}`")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
