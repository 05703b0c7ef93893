"""Side-by-side timing benchmarks (`isac bench`). Ratios are measured in one run on the same instances.

``fang``: the 003 solvers against N_t on `fang` preset draws with N_s = 6 (Table I's
setting), one instance at a time: ``sca`` (default L-BFGS step), ``sca -o rule=authors`` (the
authors' script: its auxiliary step and stopping rule; the reference of every ratio), ``sca``
with the paper's and the adaptive step, ``sca-lowdim`` (Prop. 5) with the L-BFGS and the paper's
step, and ``wmmse-sdr`` (only up to ``sdr_max_tx`` antennas). Then the throughput at the default
size (N_t = 16, N_s = 16): ``solve_batch`` over ``batch`` instances on each of ``batch_threads``
torch thread counts (and on ``device`` if given, e.g. a GPU) against ``rule=authors`` and the
default one instance at a time. Each row reports time per instance, instances/s, ms per
iteration, mean iterations, mean objective and how many instances end below ``rule=authors``
(by more than 1e-4), so speed is never bought with quality unseen.

``zhao``: 004's Table II setting, time per instance against the grid size N on draws of one
``beampattern-sinr`` preset (default ``zhao-fixed-b``, the Fig. 7 targets, with its shipped GNN):
``sdr`` (default backend SCS, and with Clarabel as the Table II spec runs it: SCS stalls at
N = 10, where the on-grid optimum is ~0 and not unique), ``zf``, ``gnn`` one instance at a time, ``gnn`` batched (one forward pass over
``batch`` instances after one untimed warm-up batch, wall time / batch: the GNN-IP inference
time without projection), ``gnn-ip`` one at a time (projection included when it runs) and ``gnn-ip`` batched. Each
row reports the MSE on the 1-degree grid (``beampattern_mse_fine``, Table II's number), the
fraction feasible and, for ``gnn-ip``, the fraction projected.

``li``: 000 at the default `li` size (K = 3, N = 10, M = 24, Ns = 24). Per BS: ``admm``
(000's Algorithm 2), ``fast`` (ours) and ``zf-ns`` on the same (P3.k) problems (each BS of the
association ``exact`` finds on the first AO step), with the objective (30) each reaches; per
full AO (association ``exact``) with each beamformer; and the association solvers ``exact`` vs
``brute-force`` vs the MILP reference on SINR matrices up to K x N = 10 x 40
(:func:`isac.experiments.bench_li.bench_li_association`).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def bench_fang(
    num_tx: Sequence[int] = (8, 16, 32, 64, 128),
    instances: int = 5,
    sdr_max_tx: int = 16,
    echo: Callable[[str], None] = print,
    device: str | None = None,
    batch: int = 1000,
    batch_threads: Sequence[int] = (1, 2),
) -> list[dict[str, Any]]:
    """Rows for :func:`write_report`: single solves per N_t, then batched throughput at N_t = 16."""
    from isac.scenario.instances.crlb_sumrate import fang_preset
    from isac.solvers.registry import get_solver

    def solver(name: str, **opts: Any):
        return get_solver("crlb-sumrate", name, opts)

    rows: list[dict[str, Any]] = []
    for nt in num_tx:
        insts = [fang_preset(seed, num_tx=nt, num_sensing_streams=6) for seed in range(instances)]
        methods: list[tuple[str, Any]] = [
            ("sca", solver("sca")),
            ("sca rule=authors", solver("sca", rule="authors")),
            ("sca step=paper", solver("sca", step="paper")),
            ("sca step=adaptive", solver("sca", step="adaptive")),
            ("sca-lowdim", solver("sca-lowdim")),
            ("sca-lowdim step=paper", solver("sca-lowdim", step="paper")),
        ]
        if nt <= sdr_max_tx:
            methods.append(("wmmse-sdr", solver("wmmse-sdr")))
        solver("sca").solve(insts[0])  # first-call costs (imports, caches) outside the timings
        runs = [(label, lambda s=s: [s.solve(i) for i in insts]) for label, s in methods]
        if device and device != "cpu":
            runs.append((f"sca batched {device}", lambda: solver("sca", device=device).solve_batch(insts)))
        timed = [_timed(nt, label, run) for label, run in runs]
        authors_row, authors_objs = next(t for t in timed if t[0]["method"] == "sca rule=authors")
        for row, objs in timed:
            row["speedup_vs_authors"] = authors_row["time_s"] / row["time_s"]
            row["below_authors"] = _below(objs, authors_objs)
            rows.append(row)
            echo(f"N_t={nt:<4} {row['method']:<22} {row['time_s']:.4f} s/instance, {row['ms_per_iteration']:.3f} "
                 f"ms/iteration, objective {row['objective_mean']:.6g}, iterations {row['iterations_mean']:.0f}")
    if batch:
        # throughput at the default size; the authors' rate from their iteration run one instance at a time
        insts = [fang_preset(seed) for seed in range(batch)]
        ref = insts[: max(instances, 2)]
        authors, default = solver("sca", rule="authors"), solver("sca")
        runs = [("sca rule=authors, one at a time", lambda: [authors.solve(i) for i in ref]),
                ("sca, one at a time", lambda: [default.solve(i) for i in ref])]
        runs += [(f"sca solve_batch x{batch}, {th} thread{'s' if th > 1 else ''}",
                  lambda th=th: solver("sca", threads=th).solve_batch(insts)) for th in batch_threads]
        if device and device != "cpu":
            runs.append((f"sca solve_batch x{batch}, {device}", lambda: solver("sca", device=device).solve_batch(insts)))
        timed = [_timed(16, label, run) for label, run in runs]
        base_row, base_objs = timed[0]
        for row, objs in timed:
            row["speedup_vs_authors"] = row["instances_per_s"] / base_row["instances_per_s"]
            if len(objs) == len(base_objs):  # the same instances as the reference
                row["below_authors"] = _below(objs, base_objs)
            rows.append(row)
            echo(f"N_t=16   {row['method']}: {row['instances_per_s']:.1f} instances/s")
    return rows


def _timed(nt: int, label: str, run: Callable[[], list]) -> tuple[dict[str, Any], list[float]]:
    """Run ``run()`` (a list of Results) once: its row (time per instance, instances/s, ms per iteration, ...)
    and the objectives."""
    t0 = time.perf_counter()
    res = run()
    total_s = time.perf_counter() - t0
    objs = [r.metrics["objective"] for r in res]
    iters = [r.iterations for r in res]
    return {"num_tx": nt, "method": label, "instances": len(res), "time_s": total_s / len(res),
            "instances_per_s": len(res) / total_s, "objective_mean": statistics.mean(objs),
            "iterations_mean": statistics.mean(iters), "ms_per_iteration": 1e3 * total_s / max(sum(iters), 1)}, objs


def _below(objs: list[float], authors: list[float]) -> int:
    """How many instances end below the authors' iteration by more than 1e-4."""
    return sum(o < a - 1e-4 for o, a in zip(objs, authors))


def _median_run(run: Callable[[], list], repeats: int = 5) -> list:
    """The results of the run with the median total ``time_s`` of ``repeats`` runs (one batched call is
    one timing: repeating it keeps a single slow call, e.g. after the machine idled, out of the ratios)."""
    runs = sorted((run() for _ in range(repeats)), key=lambda res: sum(r.time_s for r in res))
    return runs[len(runs) // 2]


def bench_zhao(
    grid_points: Sequence[int] = (180, 60, 30, 10),
    instances: int = 10,
    batch: int = 1000,
    preset: str = "zhao-fixed-b",
    echo: Callable[[str], None] = print,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """004's solvers on the same instances per grid size: time per instance (mean and median), the
    median speed-up against ``sdr``, MSE, feasibility, and for ``gnn-ip`` the share projected and the
    time split (model + check, projection). Learned rows without a trained model are skipped."""
    from isac.scenario.problems import make_preset
    from isac.solvers.base import OptionError
    from isac.solvers.registry import get_solver

    problem = "beampattern-sinr"
    dev = device or "cpu"
    rows: list[dict[str, Any]] = []
    for n in grid_points:
        insts = [make_preset(problem, preset, seed, grid_points=n) for seed in range(instances)]
        many = insts + [make_preset(problem, preset, seed, grid_points=n) for seed in range(instances, batch)]

        def learned(name: str, **opts: Any):
            solver = get_solver(problem, name, {"device": dev, **opts})
            try:
                solver.solve(insts[0])  # load the model outside the timings
            except OptionError as e:
                echo(f"N={n:<4} {name} {opts or ''}: skipped ({e})")
                return None
            solver.solve_batch(many[:8])  # warm up the batched path
            return solver

        runs: list[tuple[str, Callable[[], list]]] = [
            ("sdr", lambda: [get_solver(problem, "sdr").solve(i) for i in insts]),
            ("sdr clarabel", lambda: [get_solver(problem, "sdr", {"backend": "CLARABEL"}).solve(i) for i in insts]),
            ("zf", lambda: [get_solver(problem, "zf").solve(i) for i in insts]),
        ]
        for label, name, opts in (("gnn", "gnn", {}), ("gnn-fl", "gnn-fl", {}),
                                  ("gnn-ip model=gnn (004)", "gnn-ip", {"model": "gnn"}),
                                  ("gnn-ip model=gnn, CVXPY projection", "gnn-ip",
                                   {"model": "gnn", "projection_backend": "CLARABEL"}),
                                  ("gnn-ip", "gnn-ip", {})):
            solver = learned(name, **opts)
            if solver is None:
                continue
            runs.append((label, lambda s=solver: [s.solve(i) for i in insts]))
            if label in ("gnn", "gnn-fl", "gnn-ip"):
                runs.append((f"{label} batched x{len(many)}", lambda s=solver: _median_run(lambda: s.solve_batch(many))))
        for label, run in runs:
            res = run()
            times = [r.time_s for r in res]
            row: dict[str, Any] = {
                "grid_points": n, "method": label, "instances": len(res),
                "time_s": statistics.mean(times), "time_median_s": statistics.median(times),
                "mse_fine_mean": statistics.mean(r.metrics["beampattern_mse_fine"] for r in res),
                "feasible": statistics.mean(float(r.feasible) for r in res)}
            if label.startswith("gnn-ip"):
                projected = [r for r in res if r.info.get("projected")]
                row["projected"] = len(projected) / len(res)
                row["model_feasible"] = 1.0 - row["projected"]
                row["model_s"] = statistics.mean(r.timings.get("gnn_s", 0.0) for r in res)
                row["projection_s"] = (statistics.median(r.timings["projection_s"] for r in projected)
                                       if projected else None)
                row["model"] = res[0].info.get("model")
            rows.append(row)
            extra = ""
            if "projected" in row:
                extra = (f", model alone feasible {row['model_feasible']:.0%}, projected {row['projected']:.0%}"
                         + (f" (median projection {row['projection_s'] * 1e3:.1f} ms)" if row["projection_s"] else ""))
            echo(f"N={n:<4} {label:<36} median {row['time_median_s']:.3g} s/instance, MSE {row['mse_fine_mean']:.4f}, "
                 f"feasible {row['feasible']:.0%}{extra}")
        base = next(r["time_median_s"] for r in rows if r["grid_points"] == n and r["method"] == "sdr")
        for r in rows:
            if r["grid_points"] == n:
                r["speedup_vs_sdr"] = base / r["time_median_s"]
    return rows


def bench_li(
    instances: int = 3,
    admm_max_iterations: int = 100,
    association_sizes: Sequence[tuple[int, int]] = ((3, 10), (4, 10), (5, 20), (10, 40)),
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """000's beamformers per BS and per full AO, then the association solvers; rows for :func:`write_report`."""
    import numpy as np
    import torch

    from isac.scenario.problems import make_preset
    from isac.solvers.li_association import associate
    from isac.solvers.li_beamforming import BsProblem, get_beamformer
    from isac.solvers.registry import get_solver

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    try:
        insts = [make_preset("multibs-association", "li", seed) for seed in range(instances)]
        per_bs: dict[str, list[tuple[float, float, bool]]] = {"admm": [], "fast": [], "zf-ns": []}
        for seed, inst in enumerate(insts):
            snr = inst.p_max_w.numpy()[:, None] * (np.abs(inst.H.numpy()) ** 2).sum(axis=1) / inst.noise_comm_w
            assoc = associate(snr, "exact").association
            for k in range(inst.num_bs):
                bp = BsProblem.from_instance(inst, k, assoc)
                for name in per_bs:
                    bf = get_beamformer(name, {"max_iterations": admm_max_iterations} if name == "admm" else {})
                    t0 = time.perf_counter()
                    r = bf.solve(bp)
                    per_bs[name].append((time.perf_counter() - t0, r.objective, r.W is not None and bp.is_feasible(r.W)))
                echo(f"seed {seed} BS {k}: " + ", ".join(f"{n} {v[-1][0]:.3f} s obj {v[-1][1]:.4f}" for n, v in per_bs.items()))
        base = statistics.mean(t for t, _, _ in per_bs["admm"])
        for name, vals in per_bs.items():
            t = statistics.mean(v[0] for v in vals)
            rows.append({"what": "per BS (P3.k)", "size": "K=3 N=10 M=24", "method": name, "time_s": t,
                         "speedup_vs_admm": base / t, "objective_mean": statistics.mean(v[1] for v in vals),
                         "feasible": statistics.mean(float(v[2]) for v in vals)})
        ao: dict[str, list[tuple[float, float, bool]]] = {}
        for name in ("admm", "fast"):
            opts = {"beamformer": name, **({"beamformer_max_iterations": admm_max_iterations} if name == "admm" else {})}
            solver = get_solver("multibs-association", "ao", opts)
            for inst in insts:
                t0 = time.perf_counter()
                r = solver.solve(inst)
                ao.setdefault(name, []).append((time.perf_counter() - t0, r.metrics.get("sum_rate_bps_hz", float("nan")),
                                                r.feasible))
            echo(f"full AO, beamformer {name}: {statistics.mean(v[0] for v in ao[name]):.3f} s/instance")
        base = statistics.mean(v[0] for v in ao["admm"])
        for name, vals in ao.items():
            t = statistics.mean(v[0] for v in vals)
            rows.append({"what": "full AO (exact association)", "size": "K=3 N=10 M=24", "method": name, "time_s": t,
                         "speedup_vs_admm": base / t, "objective_mean": statistics.mean(v[1] for v in vals),
                         "feasible": statistics.mean(float(v[2]) for v in vals)})
    finally:
        torch.set_num_threads(old)
    from isac.experiments.bench_li import bench_li_association

    assoc_rows = bench_li_association(sizes=tuple(association_sizes), instances=instances, echo=echo)
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for r in assoc_rows:
        groups.setdefault((r["K"], r["N"], r["method"]), []).append(r)
    for (k, n, method), rs in groups.items():
        t = statistics.mean(r["time_s"] for r in rs)
        ref = groups.get((k, n, "milp"))
        rows.append({"what": "association (P2)", "size": f"K={k} N={n}", "method": method, "time_s": t,
                     "speedup_vs_milp": (statistics.mean(r["time_s"] for r in ref) / t) if ref else None,
                     "objective_mean": statistics.mean(r["objective"] for r in rs),
                     "feasible": statistics.mean(float(bool(r.get("agrees", True))) for r in rs)})
    return rows


LI_COLUMNS = [("what", "step", "{}"), ("size", "size", "{}"), ("method", "method", "{}"),
              ("time_s", "time per instance [s]", "{:.4g}"), ("speedup_vs_admm", "speed-up vs admm", "{:.3g}"),
              ("speedup_vs_milp", "speed-up vs MILP", "{:.3g}"), ("objective_mean", "mean objective [bit/s/Hz]", "{:.6g}"),
              ("feasible", "feasible / agrees", "{:.0%}")]
FANG_COLUMNS = [("num_tx", "N_t", "{}"), ("method", "method", "{}"), ("instances", "instances", "{}"),
                ("time_s", "time per instance [s]", "{:.4g}"), ("instances_per_s", "instances/s", "{:.3g}"),
                ("speedup_vs_authors", "speed-up vs rule=authors", "{:.3g}"),
                ("ms_per_iteration", "ms/iteration", "{:.3g}"), ("iterations_mean", "mean iterations", "{:.0f}"),
                ("objective_mean", "mean objective", "{:.7g}"), ("below_authors", "below rule=authors", "{}")]
ZHAO_COLUMNS = [("grid_points", "N", "{}"), ("method", "method", "{}"), ("instances", "instances", "{}"),
                ("time_median_s", "median time per instance [s]", "{:.3g}"), ("time_s", "mean time [s]", "{:.3g}"),
                ("speedup_vs_sdr", "median speed-up vs sdr", "{:.4g}"),
                ("mse_fine_mean", "mean MSE (1-deg grid)", "{:.4f}"), ("feasible", "feasible", "{:.0%}"),
                ("model_feasible", "model alone feasible", "{:.0%}"), ("projected", "projected", "{:.0%}"),
                ("model_s", "model + check [s]", "{:.3g}"), ("projection_s", "median projection [s]", "{:.3g}")]


def write_report(rows: list[dict[str, Any]], out: Path, title: str,
                 columns: Sequence[tuple[str, str, str]] = FANG_COLUMNS) -> Path:
    """``bench.json`` and ``bench.csv`` (the rows, every key) and ``bench.md`` (a table of ``columns``: key, header, format)."""
    import csv

    import torch

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "bench.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {title}", "", f"Machine: {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads.", "",
             "| " + " | ".join(c[1] for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = ["–" if r.get(key) is None else fmt.format(r[key]) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    path = out / "bench.md"
    path.write_text("\n".join(lines) + "\n")
    return path
