"""002's benchmark: every ``coop-localization`` solver side by side on the same ``lian`` instances.

Instances are preset ``lian`` draws (seeds 0..instances-1; N = 3 BSs, 4x4 UPAs, K = 5) at the
given per-BS powers, with gamma = ``gamma_over_floor`` x the SPEB floor (default 2: the
constraint binds). Every method runs on the same instances, one at a time (``single``) and, where
the solver has ``solve_batch``, all at once (``batched``). A row per (power, method, mode): the
wall time per instance, the mean sum rate of the returned points, the share of instances whose
point meets gamma and the budgets (by the evaluator, on the true channels) and the status counts.
Methods that are not registered are left out (the learned ones need their module and checkpoints;
a method that fails on an instance says why in ``statuses``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

LIAN_METHODS = ("sca-sdr", "pdpg", "lhgnn", "lhgnn-noatt", "homognn", "cnn", "lhgnn-rzf")
SINGLE_ONLY = ("sca-sdr",)
"""Methods timed one instance at a time only (slow references)."""
LEARNED = ("lhgnn", "lhgnn-noatt", "homognn", "cnn", "lhgnn-rzf")

LIAN_COLUMNS = [("p_max_dbm", "P_n [dBm]", "{:g}"), ("method", "method", "{}"), ("mode", "mode", "{}"),
                ("instances", "instances", "{}"), ("time_s", "wall / instance [s]", "{:.3g}"),
                ("solver_s", "solver time / instance [s]", "{:.3g}"),
                ("sum_rate_bps_hz", "mean sum rate [bit/s/Hz]", "{:.4g}"), ("meets_gamma", "meets gamma", "{:.0%}"),
                ("speedup", "pdpg single solver time / this", "{:.3g}"), ("statuses", "statuses", "{}")]


def bench_lian(powers_dbm: Sequence[float] = (10.0, 20.0, 30.0), instances: int = 3,
               methods: Sequence[str] = LIAN_METHODS, gamma_over_floor: float = 2.0,
               slow_instances: int | None = None, options: dict[str, dict[str, Any]] | None = None,
               large_batch: int = 0, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Rows ``{p_max_dbm, method, mode, instances, seeds, time_s, sum_rate_bps_hz, meets_gamma, statuses}``.

    ``slow_instances``: how many of the instances the :data:`SINGLE_ONLY` methods run (None: all, 0: skip them).
    ``options``: solver options per method name (e.g. ``{"pdpg": {"max_iterations": 50}}``).
    ``large_batch``: also time the learned methods (:data:`LEARNED`) on that many further draws in one
    batch (mode ``batched-B``; a GPU-sized batch shows their per-instance cost without the fixed
    overhead of a call), with ``speedup`` = pdpg's single solver time per instance / theirs. The wall time
    per instance includes the metrics package's evaluation of every Result (~1-2 ms per instance on one
    thread); ``solver_s`` is the solver's own time (``Result.time_s``: a batch's time shared equally).
    """
    from isac.scenario.problems import make_preset
    from isac.solvers.base import one_thread
    from isac.solvers.registry import get_solver, solvers_for

    available = solvers_for("coop-localization")
    chosen = [m for m in methods if m in available]
    rows: list[dict[str, Any]] = []
    with one_thread():  # restores the caller's thread count afterwards
        for p in powers_dbm:
            insts = [make_preset("coop-localization", "lian", seed, p_max_dbm=float(p),
                                 gamma_over_floor=float(gamma_over_floor)) for seed in range(instances)]
            for m in chosen:
                solver = get_solver("coop-localization", m, (options or {}).get(m, {}))
                subset = insts
                if m in SINGLE_ONLY and slow_instances is not None:
                    subset = insts[:slow_instances]
                if not subset:
                    continue
                modes = ["single"] + (["batched"] if hasattr(solver, "solve_batch") and m not in SINGLE_ONLY else [])
                for mode in modes:
                    row = _run(solver, subset, mode)
                    row.update(p_max_dbm=float(p), method=m)
                    rows.append(row)
                if large_batch and m in LEARNED and hasattr(solver, "solve_batch"):
                    many = [make_preset("coop-localization", "lian", instances + seed, p_max_dbm=float(p),
                                        gamma_over_floor=float(gamma_over_floor)) for seed in range(large_batch)]
                    solver.solve_batch(many[:2])  # load the model outside the timing
                    row = _run(solver, many, "batched")
                    row.update(p_max_dbm=float(p), method=m, mode=f"batched-{large_batch}",
                               seeds=[instances, instances + large_batch - 1])
                    rows.append(row)
            ref = next((r["solver_s"] for r in rows if r["method"] == "pdpg" and r["mode"] == "single"
                        and r["p_max_dbm"] == float(p)), None)
            for r in rows:
                if r["p_max_dbm"] != float(p):
                    continue
                if ref and r.get("solver_s"):
                    r["speedup"] = ref / r["solver_s"]
                rate = r["sum_rate_bps_hz"]
                echo(f"P={p:g} dBm {r['method']} ({r['mode']}): {r['time_s']:.3g} s/instance, sum rate "
                     f"{'-' if rate is None else f'{rate:.4g}'}, meets gamma {r['meets_gamma']:.0%}, "
                     f"{r['statuses']}")
    return rows


def _run(solver, insts, mode: str) -> dict[str, Any]:
    results: list[Any] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    if mode == "batched":
        try:
            results = list(solver.solve_batch(insts))
        except Exception as e:  # noqa: BLE001  (a report row says why instead of ending the benchmark)
            errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
    else:
        for inst in insts:
            try:
                results.append(solver.solve(inst))
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
    dt = (time.perf_counter() - t0) / len(insts)
    rates = [float(r.metrics["sum_rate_bps_hz"]) for r in results if "sum_rate_bps_hz" in r.metrics]
    counts = Counter(r.status.value for r in results)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    if errors:
        statuses = "; ".join([s for s in [statuses] if s] + [f"error ({len(errors)}x): {errors[0]}"])
    solver_s = sum(float(r.time_s) for r in results) / len(results) if results else None
    return {"mode": mode, "instances": len(insts), "seeds": list(range(len(insts))), "time_s": dt, "solver_s": solver_s,
            "sum_rate_bps_hz": sum(rates) / len(rates) if rates else None,
            "meets_gamma": sum(bool(r.feasible) for r in results) / len(insts), "statuses": statuses}
