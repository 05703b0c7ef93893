"""The ``make demo`` job: every family's proposed method beside one baseline, on one instance each.

=====  =======================  =====================  ====================  ==============================
paper  family                   instance               proposed              baseline
=====  =======================  =====================  ====================  ==============================
003    ``crlb-sumrate``         ``fang``, seed 0       ``sca``               ``zf``
004    ``beampattern-sinr``     ``zhao-fixed-a``, 1    ``gnn-ip`` (GNN+IP)   ``sdr``
000    ``multibs-association``  ``li``, seed 0         ``ao`` + ``exact``    ``ao`` + ``gale-shapley``
001    ``bs-selection``         ``small``, seed 3      ``penalty-sdr``       ``scheme1`` (nearest BS)
002    ``coop-localization``    ``lian``, seed 0       ``lhgnn``             ``pdpg``
=====  =======================  =====================  ====================  ==============================

Every method runs with its default options, except ``gnn-ip`` with ``model=gnn`` (004's GNN-IP as
published, not our feasibility layer). 000 proposes an LLM for the association (``association=llm``,
which needs a chat server); the demo shows ``exact``, the provably optimal association that the LLM
is measured against, beside the paper's "convex method only" baseline. Seeds are draws that show what the methods do: on seed 1 of
``zhao-fixed-a`` the GNN's own output misses an SINR target, so the implicit projection runs; on
seed 3 of ``small`` Algorithm 1 does not pick the BS nearest the target. 001 runs on ``small``
because Algorithm 1 from every receiver takes 40-80 s on ``xu-fig2`` (the paper's Fig. 2 layout)
on 2 cores. ``gnn-ip`` runs through ``solve_batch`` (a batch of one, torch): its single-instance
path compiles Numba kernels on a machine's first run (30-40 s), the same network and numbers.

One table (metric with its unit, feasibility by :mod:`isac.metrics`, status, solve time) is
printed and written to ``results.json`` and ``index.md`` with one picture per system. A method
that raises is reported with status ``ERROR`` and its message; the demo goes on.
``quick=True`` (tests) draws 003's trade-off curves with 3-4 points each instead of 5-8.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from isac.metrics.evaluate import to_python
from isac.scenario.problems import make_preset
from isac.solvers.base import Result
from isac.solvers.registry import get_solver


@dataclass(frozen=True)
class Method:
    """One solver run of the demo: ``role`` is "proposed" (the paper's method), "baseline" or, for 000,
    "optimal UA" (the provably optimal association the paper's LLM is measured against)."""

    label: str
    solver: str
    role: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One family's instance, its two methods and the metric the table shows (``goal``: max or min)."""

    paper: str
    family: str
    preset: str
    seed: int
    metric: str
    metric_label: str
    goal: str
    methods: tuple[Method, Method]
    figure: str
    caption: str


def cases() -> list[Case]:
    """The demo's five families, in the order of the table."""
    return [
        Case("003", "crlb-sumrate", "fang", 0, "objective", "objective dc*sumR - ds*tr(F^-1) [-]", "max",
             (Method("sca", "sca", "proposed"), Method("zf", "zf", "baseline")),
             "003_crlb-sumrate.png",
             "003: sum rate against the angle+RCS CRLB, SCA over the weight delta_c and ZF over its power "
             "split, with the two table points circled."),
        Case("004", "beampattern-sinr", "zhao-fixed-a", 1, "beampattern_mse", "beampattern MSE [W^2]", "min",
             (Method("gnn-ip", "gnn-ip", "proposed", {"model": "gnn"}), Method("sdr", "sdr", "baseline")),
             "004_beampattern-sinr.png",
             "004: transmit beampatterns of GNN-IP and SDR against the scaled desired pattern, "
             "targets at -40, 0 and 40 deg."),
        Case("000", "multibs-association", "li", 0, "sum_rate_bps_hz", "sum rate [bit/s/Hz]", "max",
             (Method("ao exact", "ao", "optimal UA", {"association": "exact"}),
              Method("ao gale-shapley", "ao", "baseline", {"association": "gale-shapley"})),
             "000_multibs-association.png",
             "000: network layout with each user's serving BS under the optimal association and under "
             "Gale-Shapley matching, with every BS's detection and estimation target."),
        Case("001", "bs-selection", "small", 3, "total_power_w", "total power [W]", "min",
             (Method("penalty-sdr", "penalty-sdr", "proposed"), Method("scheme1 (nearest BS)", "scheme1", "baseline")),
             "001_bs-selection.png",
             "001: the sensing receiver and user association chosen by Algorithm 1 (penalty-SDR) and by "
             "the nearest-BS rule, with the target's echo paths."),
        Case("002", "coop-localization", "lian", 0, "sum_rate_bps_hz", "sum rate [bit/s/Hz]", "max",
             (Method("lhgnn", "lhgnn", "proposed"), Method("pdpg", "pdpg", "baseline")),
             "002_coop-localization.png",
             "002: the cooperating BSs, users and target (top view) and, zoomed on the target, the 1-sigma "
             "position error ellipses (x-y part of the CRB) that the LHGNN and PDPG beams allow."),
    ]


def _finite(x: Any) -> float | None:
    """A finite float, or None (JSON has no NaN/Inf; a missing value stays missing)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(x: Any) -> Any:
    """JSON-ready: tensors to lists, non-finite floats to None, recursively."""
    x = to_python(x)
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return _finite(x)
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return str(x)


def _details(case: Case, inst, r: Result) -> tuple[str, dict[str, Any]]:
    """The table's notes and the secondary numbers behind them, per family."""
    m = r.metrics
    if case.paper == "003":
        d = {"sum_rate_nats": m["sum_rate_nats"], "crlb_trace": m["crlb_trace"]}
        return f"sum rate {d['sum_rate_nats']:.2f} nats/s/Hz, tr(F^-1) {d['crlb_trace']:.3g}", d
    if case.paper == "004":
        d = {"min_sinr_db": m["min_sinr_db"], "sinr_target_db": m["sinr_target_db"]}
        text = f"min SINR {d['min_sinr_db']:.1f} dB (target {d['sinr_target_db']:.0f})"
        if "projected" in r.info:
            d["projected"] = bool(r.info["projected"])
            text += ", projection " + ("used" if d["projected"] else "not needed")
        return text, d
    if case.paper == "000":
        d = {"min_radar_snr_db": min(m["radar_snr_db"]), "snr_min_db": inst.snr_min_db,
             "bs_load": [int(round(float(n))) for n in m["bs_load"]]}
        return (f"min radar SNR {d['min_radar_snr_db']:.1f} dB (target {d['snr_min_db']:.0f}), "
                f"users per BS {d['bs_load']}"), d
    if case.paper == "001":
        d = {"receiver": int(m["receiver"]), "crb_position_m2": m["crb_position_m2"], "crb_max_m2": m["crb_max_m2"]}
        return f"receiver BS {d['receiver']}, CRLB {d['crb_position_m2']:.3g} m^2 (max {d['crb_max_m2']:.3g})", d
    d = {"speb_m2": m["speb_m2"], "speb_over_gamma": m["speb_over_gamma"]}
    return f"SPEB {d['speb_m2']:.3g} m^2 = {d['speb_over_gamma']:.2f} gamma", d


def _run_method(case: Case, method: Method, inst) -> tuple[dict[str, Any], Result | None]:
    """Solve, never raise: a failure is a row with status ERROR and its message."""
    row: dict[str, Any] = {"paper": case.paper, "family": case.family, "preset": case.preset, "seed": case.seed,
                           "method": method.label, "solver": method.solver, "role": method.role,
                           "options": dict(method.options), "metric": case.metric,
                           "metric_label": case.metric_label, "goal": case.goal}
    t0 = time.perf_counter()
    try:
        solver = get_solver(case.family, method.solver, dict(method.options))
        if method.solver == "gnn-ip":
            res = solver.solve_batch([inst])[0]  # torch path: no one-time Numba compilation (module docstring)
        else:
            res = solver.solve(inst)
    except Exception as e:  # noqa: BLE001 -- the demo reports a failing method and goes on
        row.update({"value": None, "feasible": False, "status": "ERROR",
                    "message": f"{type(e).__name__}: {e}".splitlines()[0], "time_s": time.perf_counter() - t0,
                    "notes": "", "details": {}, "info": {}})
        return row, None
    notes, details = _details(case, inst, res) if res.metrics.get(case.metric) is not None else ("", {})
    row.update({"value": _finite(res.metrics.get(case.metric)), "feasible": res.feasible,
                "status": res.status.value, "message": res.message, "time_s": res.time_s,
                "iterations": int(res.iterations), "notes": notes, "details": _clean(details),
                "info": _clean(res.info)})
    return row, res


def _fang_curves(inst, quick: bool) -> dict[str, list[dict[str, float]]]:
    """003's trade-off: ``sca`` over the weight delta_c (delta_s fixed), ``zf`` over its power split."""
    deltas = (1e-2, 1.0, 1e2) if quick else (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
    shares = (0.1, 0.5, 0.9) if quick else (0.1, 0.3, 0.5, 0.7, 0.9)
    out: dict[str, list[dict[str, float]]] = {"sca": [], "zf": []}
    for dc in sorted({*deltas, float(inst.delta_c)}):  # the preset's weight too: the table's point is on the curve
        r = get_solver("crlb-sumrate", "sca").solve(inst.with_params(delta_c=dc))
        if r.feasible:
            out["sca"].append({"delta_c": dc, "sum_rate_nats": float(r.metrics["sum_rate_nats"]),
                               "crlb_trace": float(r.metrics["crlb_trace"])})
    for share in shares:
        r = get_solver("crlb-sumrate", "zf", {"comm_power_fraction": share}).solve(inst)
        if r.feasible:
            out["zf"].append({"comm_power_fraction": share, "sum_rate_nats": float(r.metrics["sum_rate_nats"]),
                              "crlb_trace": float(r.metrics["crlb_trace"])})
    return {k: [p for p in v if all(math.isfinite(x) for x in p.values())] for k, v in out.items()}


# --- pictures -------------------------------------------------------------------------------------

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan", "tab:olive",
           "tab:pink", "tab:gray", "tab:red")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 10.5, "legend.fontsize": 8.5})
    return plt


def _save(fig, path: Path) -> None:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=130)
    _plt().close(fig)


def _label(row: Mapping[str, Any], unit: str, fmt: str = ".3g") -> str:
    v = row.get("value")
    return f"{row['method']} ({'failed: ' + row['status'] if v is None else format(v, fmt) + unit})"


def _draw_fang(path: Path, case: Case, inst, rows, results, curves) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from isac.experiments.analysis import _axes

    fig, ax = _axes()
    fig.set_size_inches(7.0, 4.4)
    styles = {"sca": ("tab:blue", "o"), "zf": ("tab:orange", "s")}
    deltas = [p["delta_c"] for p in curves.get("sca", [])]
    names = {"sca": f"SCA, delta_c from {min(deltas, default=0):g} to {max(deltas, default=0):g}",
             "zf": "ZF, comm. power share 0.1 to 0.9"}
    for key, pts in curves.items():
        if pts:
            ax.plot([p["crlb_trace"] for p in pts], [p["sum_rate_nats"] for p in pts], color=styles[key][0],
                    marker=styles[key][1], ms=4, lw=1.2, label=names[key])
    for row, res in zip(rows, results):
        if res is None or not res.feasible:
            continue
        color, marker = styles.get(row["solver"], ("k", "o"))
        setting = (f"delta_c = {inst.delta_c:g}" if row["solver"] == "sca"
                   else f"comm. share {res.options.get('comm_power_fraction', 0.5):g}")
        ax.plot(res.metrics["crlb_trace"], res.metrics["sum_rate_nats"], marker=marker, ms=11, mfc="none",
                mec=color, mew=2, ls="none", label=f"table row: {row['method']} ({setting})")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(r"sensing: CRLB $\mathrm{tr}(\mathbf{F}^{-1})$ (angles + RCS, lower is better)")
    ax.set_ylabel("sum rate [nats/s/Hz]")
    ax.set_title(f"003 crlb-sumrate, preset {case.preset}, seed {case.seed}: rate-CRLB trade-off")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    _save(fig, path)


def _draw_zhao(path: Path, case: Case, inst, rows, results, curves) -> None:
    from isac.experiments.analysis import _axes

    fig, ax = _axes()
    grid = inst.grid.tolist()
    styles = ({"color": "tab:blue", "lw": 1.8}, {"color": "tab:orange", "lw": 1.4, "ls": "--"})
    betas = []
    for row, res, style in zip(rows, results, styles):
        if res is None or "beampattern" not in res.metrics:
            continue
        how = {True: " (projected)", False: " (GNN output as is)"}.get(row["info"].get("projected"), "")
        ax.plot(res.metrics["grid_deg"], res.metrics["beampattern"],
                label=f"{row['method']}: MSE {res.metrics['beampattern_mse']:.3g} W^2{how}", **style)
        betas.append(float(res.metrics["beta"]))
    if betas:  # the desired pattern b (eq. (34)) times the least-squares scale beta of the baseline
        beta = betas[-1]
        ax.plot(grid, (beta * inst.desired).tolist(), color="0.35", lw=1.0, ls=":",
                label=f"desired beta*b(theta), beta = {beta:.2f} W")
    for a in inst.target_angles_deg.tolist():
        ax.axvline(a, color="tab:red", lw=0.8, alpha=0.5)
    ax.plot([], [], color="tab:red", lw=0.8, alpha=0.5, label="target directions")
    fig.set_size_inches(7.0, 4.4)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(0.0, 1.45 * ax.get_ylim()[1])  # headroom for the legend
    ax.set_xlabel("angle theta [deg]")
    ax.set_ylabel(r"beampattern $\mathbf{a}^H(\theta)\mathbf{R}\,\mathbf{a}(\theta)$ [W]")
    ax.set_title(f"004 beampattern-sinr, preset {case.preset}, seed {case.seed}\n"
                 f"M = {inst.num_antennas} antennas, {inst.H.shape[-1]} users at SINR >= {inst.sinr_db:g} dB, "
                 f"tr R = {inst.power_w:g} W")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    _save(fig, path)


def _draw_li(path: Path, case: Case, inst, rows, results, curves) -> None:
    plt = _plt()
    pos = {k: v.numpy() for k, v in (inst.positions or {}).items()}
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.8), sharex=True, sharey=True, layout="constrained")
    for ax, row, res in zip(axes, rows, results):
        if pos:
            bs, users = pos["bs_m"], pos["users_m"]
            if res is not None and "association" in res.solution:
                serving = res.solution["association"].argmax(0).tolist()
                for i, k in enumerate(serving):
                    ax.plot([bs[k, 0], users[i, 0]], [bs[k, 1], users[i, 1]], color=_COLORS[k % 10], lw=0.9, alpha=0.7)
                    ax.plot(users[i, 0], users[i, 1], "o", ms=6, color=_COLORS[k % 10], mec="k", mew=0.5)
            else:
                ax.plot(users[:, 0], users[:, 1], "o", ms=6, color="0.6", mec="k", mew=0.5)
            for k in range(bs.shape[0]):
                c = _COLORS[k % 10]
                ax.plot(bs[k, 0], bs[k, 1], "^", ms=12, color=c, mec="k")
                ax.annotate(f"BS {k}", bs[k], textcoords="offset points", xytext=(6, 6), fontsize=9)
                ax.plot(*pos["detection_targets_m"][k], "x", ms=8, mew=2, color=c)
                ax.plot(*pos["estimation_targets_m"][k], "D", ms=6, color=c, mfc="none", mew=1.5)
        ax.set_title(_label(row, " bit/s/Hz", ".2f"))
        ax.set_xlabel("x [m]")
        ax.set_aspect("equal", adjustable="box")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("y [m]")
    handles = [plt.Line2D([], [], marker=m, ls="none", color="0.4", mec="k", ms=s, mfc=f, mew=w, label=t)
               for m, s, f, w, t in (("^", 10, "0.4", 1, "BS (colour = band)"),
                                     ("o", 6, "0.4", 0.5, "user, coloured by serving BS"),
                                     ("x", 8, "0.4", 2, "detection target of a BS"),
                                     ("D", 6, "none", 1.5, "estimation target of a BS"))]
    fig.legend(handles=handles, loc="outside lower center", ncol=4)
    fig.suptitle(f"000 multibs-association, preset {case.preset}, seed {case.seed}: user association "
                 f"({inst.num_bs} BSs, {inst.num_users} users)", fontsize=11)
    _save(fig, path)


def _draw_xu(path: Path, case: Case, inst, rows, results, curves) -> None:
    plt = _plt()
    bs = inst.bs_positions_m.numpy()
    target = inst.target_position_m.numpy()
    users = inst.user_positions_m.numpy() if inst.user_positions_m is not None else None
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.8), sharex=True, sharey=True, layout="constrained")
    for ax, row, res in zip(axes, rows, results):
        receiver = int(res.metrics["receiver"]) if res is not None and "receiver" in res.metrics else None
        assoc = list(res.metrics.get("association", [])) if res is not None else []
        if users is not None:
            for k, u in enumerate(users):
                s = int(assoc[k]) if k < len(assoc) else None
                c = _COLORS[s % 10] if s is not None else "0.6"
                if s is not None:
                    ax.plot([bs[s, 0], u[0]], [bs[s, 1], u[1]], color=c, lw=1.0, alpha=0.8)
                ax.plot(u[0], u[1], "o", ms=7, color=c, mec="k", mew=0.5)
        for s in range(bs.shape[0]):
            if s != receiver:  # transmitters illuminate the target too (C5, C6: the receiver is silent)
                ax.plot([bs[s, 0], target[0]], [bs[s, 1], target[1]], color="0.6", lw=0.8, ls=":")
        if receiver is not None:
            ax.annotate("", xy=bs[receiver], xytext=target,
                        arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 1.6, "ls": "--"})
        for s in range(bs.shape[0]):
            if s == receiver:
                ax.plot(bs[s, 0], bs[s, 1], "*", ms=20, color="tab:red", mec="k", zorder=5)
            else:
                ax.plot(bs[s, 0], bs[s, 1], "^", ms=11, color=_COLORS[s % 10], mec="k", zorder=5)
            ax.annotate(f"BS {s}" + (" (receiver)" if s == receiver else ""), bs[s], textcoords="offset points",
                        xytext=(7, 7), fontsize=9)
        ax.plot(*target, "X", ms=11, color="k", zorder=5)
        value = row.get("value")
        ax.set_title(f"{row['method']}: " + (f"failed ({row['status']})" if value is None
                                              else f"{value:.3f} W, receiver BS {receiver}"))
        ax.margins(0.15)
        ax.set_xlabel("x [m]")
        ax.set_aspect("equal", adjustable="box")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("y [m]")
    handles = [plt.Line2D([], [], marker="^", ls="none", color="0.5", mec="k", ms=10, label="transmitting BS"),
               plt.Line2D([], [], marker="*", ls="none", color="tab:red", mec="k", ms=14, label="sensing receiver"),
               plt.Line2D([], [], marker="o", ls="none", color="0.5", mec="k", ms=7,
                          label="user, coloured by its serving BS"),
               plt.Line2D([], [], marker="X", ls="none", color="k", ms=9, label="target"),
               plt.Line2D([], [], color="tab:red", ls="--", label="echo to the receiver"),
               plt.Line2D([], [], color="0.6", ls=":", label="illumination by a transmitter")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    fig.suptitle(f"001 bs-selection, preset {case.preset}, seed {case.seed}: receiving BS and association "
                 f"(min total power, SINR >= {float(inst.sinr_min_db.min()):g} dB)", fontsize=11)
    _save(fig, path)


def _error_ellipse(inst, W: torch.Tensor):
    """Semi-axes [m] and angle [deg] of the 1-sigma ellipse of the x-y part of the position CRB (J^-1)."""
    from isac.metrics.bounds.lian import lian_position_fim

    J = lian_position_fim(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, W,
                          inst.snapshots, inst.noise_sense_w, model=inst.speb_model)
    crb_xy = torch.linalg.inv(J)[:2, :2]
    vals, vecs = torch.linalg.eigh(0.5 * (crb_xy + crb_xy.T))
    vals = vals.clamp(min=0.0).sqrt()
    return float(vals[1]), float(vals[0]), math.degrees(math.atan2(float(vecs[1, 1]), float(vecs[0, 1])))


def _draw_lian(path: Path, case: Case, inst, rows, results, curves) -> None:
    from matplotlib.patches import Ellipse

    plt = _plt()
    bs = inst.bs_positions_m.numpy()
    target = inst.target_position_m.numpy()
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1.15, 1]})
    if inst.user_positions_m is not None:
        u = inst.user_positions_m.numpy()
        ax.plot(u[:, 0], u[:, 1], "o", ms=7, color="tab:green", mec="k", mew=0.5, label="users (served by all BSs)")
    for n in range(bs.shape[0]):
        ax.plot([bs[n, 0], target[0]], [bs[n, 1], target[1]], color="0.6", lw=0.8, ls=":")
        ax.annotate(f"BS {n} (z = {bs[n, 2]:.0f} m)", bs[n, :2], textcoords="offset points", xytext=(6, -12),
                    fontsize=9)
    ax.plot(bs[:, 0], bs[:, 1], "^", ms=11, color="tab:blue", mec="k", ls="none", label="cooperating BSs")
    ax.plot(target[0], target[1], "X", ms=11, color="tab:red", mec="k", ls="none",
            label=f"target (z = {target[2]:.0f} m)")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title("network (top view)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    extent = math.sqrt(inst.speb_max_m2)
    for row, res, color in zip(rows, results, ("tab:blue", "tab:orange")):
        if res is None or "W" not in res.solution:
            continue
        a, b, angle = _error_ellipse(inst, res.solution["W"])
        extent = max(extent, a)
        speb = res.metrics.get("speb_m2")
        zoom.add_patch(Ellipse((0.0, 0.0), 2 * a, 2 * b, angle=angle, fill=False, color=color, lw=2,
                               ls="-" if row["role"] == "proposed" else "--",
                               label=f"{row['method']}: {res.metrics['sum_rate_bps_hz']:.1f} bit/s/Hz, "
                                     f"SPEB {speb:.3g} m^2"))
    circle = plt.Circle((0.0, 0.0), math.sqrt(inst.speb_max_m2), fill=False, color="0.4", ls=":",
                        label=f"radius sqrt(gamma), gamma = {inst.speb_max_m2:.3g} m^2")
    zoom.add_patch(circle)
    zoom.plot(0, 0, "X", ms=9, color="tab:red", mec="k")
    lim = 1.75 * extent  # room for the legend in a corner
    zoom.set_xlim(-lim, lim)
    zoom.set_ylim(-lim, lim)
    zoom.set_aspect("equal")
    zoom.set_xlabel("x error [m]")
    zoom.set_ylabel("y error [m]")
    zoom.set_title("at the target: 1-sigma error ellipses (x-y part of the CRB)", fontsize=9.5)
    zoom.grid(True, alpha=0.3)
    zoom.legend(loc="lower left", fontsize=7.5)
    fig.suptitle(f"002 coop-localization, preset {case.preset}, seed {case.seed}: max sum rate s.t. SPEB <= gamma",
                 fontsize=11)
    _save(fig, path)


_DRAW: dict[str, Callable] = {"003": _draw_fang, "004": _draw_zhao, "000": _draw_li, "001": _draw_xu, "002": _draw_lian}


# --- table ----------------------------------------------------------------------------------------

_COLUMNS = ("paper", "family", "instance", "method", "role", "metric", "value", "feasible", "status", "time [s]",
            "notes")
_RIGHT = (6, 9)  # numeric columns


def _cells(row: Mapping[str, Any]) -> list[str]:
    v = row["value"]
    return [row["paper"], row["family"], f"{row['preset']}, seed {row['seed']}", row["method"], row["role"],
            f"{row['metric_label']} ({row['goal']})", "n/a" if v is None else f"{v:.4g}",
            "yes" if row["feasible"] else "no", row["status"], f"{row['time_s']:.2f}",
            row["notes"] or row.get("message", "")]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The plain-text table ``isac demo`` prints."""
    body = [_cells(r) for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(_COLUMNS), line(["-" * w for w in widths]), *(line(b) for b in body)])


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The same table in markdown (``index.md``)."""
    align = ["---:" if i in _RIGHT else "---" for i in range(len(_COLUMNS))]
    out = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(out)


def run_demo(out: Path, quick: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the five families' methods, print the table, write ``results.json``, ``index.md`` and five PNGs.

    Returns ``{"rows": [...], "figures": {paper: file name}, "wall_s": ...}`` (what ``results.json`` holds).
    """
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    figures: dict[str, str] = {}
    curves_all: dict[str, Any] = {}
    for case in cases():
        t0 = time.perf_counter()
        inst = make_preset(case.family, case.preset, case.seed)
        case_rows, case_results = [], []
        for method in case.methods:
            row, res = _run_method(case, method, inst)
            case_rows.append(row)
            case_results.append(res)
        curves = _fang_curves(inst, quick) if case.paper == "003" else {}
        if curves:
            curves_all["003"] = curves
        _DRAW[case.paper](out / case.figure, case, inst, case_rows, case_results, curves)
        figures[case.paper] = case.figure
        rows += case_rows
        echo(f"{case.paper} {case.family} ({case.preset}, seed {case.seed}): "
             + ", ".join(f"{r['method']} {r['status']}" for r in case_rows) + f"  [{time.perf_counter() - t0:.1f} s]")
    wall = time.perf_counter() - t_start
    echo("")
    echo(format_table(rows))
    echo(f"\n(time: the solver's own wall time, model loading excluded; whole demo {wall:.1f} s"
         f"{', quick mode' if quick else ''})")
    result = _clean({"rows": rows, "figures": figures, "tradeoff_003": curves_all.get("003", {}),
                     "quick": quick, "wall_s": wall})
    (out / "results.json").write_text(json.dumps(result, indent=1))
    _write_index(out / "index.md", rows, figures, quick, wall)
    echo(f"wrote {out / 'index.md'}, {out / 'results.json'} and {len(figures)} pictures")
    return result


def _write_index(path: Path, rows, figures: Mapping[str, str], quick: bool, wall: float) -> None:
    captions = {c.paper: c.caption for c in cases()}
    families = {c.paper: c.family for c in cases()}
    lines = ["# isac demo", "",
             "Each family's proposed method beside one baseline, on one preset instance each "
             f"(`isac demo{' --quick' if quick else ''}`, {wall:.0f} s in all). Metrics and feasibility come "
             "from `isac.metrics`, the same code for every solver; time is the solver's own wall time.", "",
             markdown_table(rows), ""]
    for paper, fig in figures.items():
        lines += [f"## {paper} {families[paper]}", "", f"![{captions[paper]}]({fig})", "", captions[paper], ""]
    path.write_text("\n".join(lines))
