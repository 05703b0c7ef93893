"""Side-by-side timing benchmarks (`isac bench`). Ratios are measured in one run on the same instances.

``fang``: time per instance of the 003 solvers against N_t, on `fang` preset draws with
N_s = 3M (Table I's setting): ``sca`` (Algorithm 1 as printed), ``sca`` with the adaptive
step, ``sca-lowdim`` (Prop. 5), ``wmmse-sdr`` (only up to ``sdr_max_tx`` antennas), ``sca-lowdim`` with the adaptive step and
batched ``sca`` (``solve_batch`` over all instances of one N_t, wall time divided by their
number; with ``device`` also batched on that device, e.g. a GPU). Each row also reports the mean objective, so speed is never bought with quality
unseen.
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
    tolerance: float = 1e-8,
    echo: Callable[[str], None] = print,
    device: str | None = None,
) -> list[dict[str, Any]]:
    from isac.scenario.instances.crlb_sumrate import fang_preset
    from isac.solvers.registry import get_solver

    rows = []
    for nt in num_tx:
        insts = [fang_preset(seed, num_tx=nt, num_sensing_streams=6) for seed in range(instances)]
        methods: list[tuple[str, Any]] = [
            ("sca", get_solver("crlb-sumrate", "sca", {"tolerance": tolerance})),
            ("sca adaptive", get_solver("crlb-sumrate", "sca", {"tolerance": tolerance, "step": "adaptive"})),
            ("sca-lowdim", get_solver("crlb-sumrate", "sca-lowdim", {"tolerance": tolerance})),
            ("lowdim adaptive", get_solver("crlb-sumrate", "sca-lowdim", {"tolerance": tolerance, "step": "adaptive"})),
        ]
        if nt <= sdr_max_tx:
            methods.append(("wmmse-sdr", get_solver("crlb-sumrate", "wmmse-sdr")))
        for label, solver in methods:
            times, objs, iters = [], [], []
            for inst in insts:
                t0 = time.perf_counter()
                r = solver.solve(inst)
                times.append(time.perf_counter() - t0)
                objs.append(r.metrics["objective"])
                iters.append(r.iterations)
            rows.append({"num_tx": nt, "method": label, "time_s": statistics.mean(times),
                         "objective_mean": statistics.mean(objs), "iterations_mean": statistics.mean(iters)})
            echo(f"N_t={nt:<4} {label:<14} {rows[-1]['time_s']:.4f} s/instance, "
                 f"objective {rows[-1]['objective_mean']:.5g}, iterations {rows[-1]['iterations_mean']:.0f}")
        for dev in ["cpu"] + ([device] if device and device != "cpu" else []):
            label = "sca batched" if dev == "cpu" else f"sca batched {dev}"
            solver = get_solver("crlb-sumrate", "sca", {"tolerance": tolerance, "device": dev})
            t0 = time.perf_counter()
            res = solver.solve_batch(insts)
            per = (time.perf_counter() - t0) / len(insts)
            rows.append({"num_tx": nt, "method": label, "time_s": per,
                         "objective_mean": statistics.mean(r.metrics["objective"] for r in res),
                         "iterations_mean": statistics.mean(r.iterations for r in res)})
            echo(f"N_t={nt:<4} {label:<14} {per:.4f} s/instance")
        base = next(r["time_s"] for r in rows if r["num_tx"] == nt and r["method"] == "sca")
        for r in rows:
            if r["num_tx"] == nt:
                r["speedup_vs_sca"] = base / r["time_s"]
    return rows


def write_report(rows: list[dict[str, Any]], out: Path, title: str) -> Path:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    lines = [f"# {title}", "", f"Machine: {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads.", "",
             "| N_t | method | time per instance [s] | speed-up vs sca | mean objective | mean iterations |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['num_tx']} | {r['method']} | {r['time_s']:.4g} | {r['speedup_vs_sca']:.2f} | "
                     f"{r['objective_mean']:.6g} | {r['iterations_mean']:.0f} |")
    path = out / "bench.md"
    path.write_text("\n".join(lines) + "\n")
    return path
