"""004's learned beamformers against SDR on a block of seeds of one beampattern-sinr preset, with the
shipped weights, all on the same instances in one run: mean MSE and its ratio to sdr's, feasible count,
how often gnn-ip projected, median time per instance and the median speed-up against sdr (one
instance at a time, and gnn-ip batched over the block).

    .venv/bin/python benchmarks/zhao_gnn_ip.py [PRESET] [FIRST_SEED] [END_SEED]
    .venv/bin/python benchmarks/zhao_gnn_ip.py zhao-fixed-a 1000 1100
"""

import statistics
import sys

import torch

from isac.scenario.problems import make_preset
from isac.solvers.registry import get_solver

RUNS = [("sdr", "sdr", {}), ("zf", "zf", {}), ("gnn", "gnn", {}), ("gnn-fl", "gnn-fl", {}),
        ("dnn", "dnn", {}), ("gnn-ip (004: GNN + projection)", "gnn-ip", {"model": "gnn"}),
        ("gnn-ip (GNN-FL + projection)", "gnn-ip", {})]

if __name__ == "__main__":
    torch.set_num_threads(1)
    preset = sys.argv[1] if len(sys.argv) > 1 else "zhao-fixed-b"
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    end = int(sys.argv[3]) if len(sys.argv) > 3 else first + 100
    insts = [make_preset("beampattern-sinr", preset, seed=s) for s in range(first, end)]
    mse, med = {}, {}
    for label, name, opts in RUNS:
        solver = get_solver("beampattern-sinr", name, opts)
        try:
            solver.solve(insts[0])  # model loading and warm-up outside the timings
        except Exception as e:  # noqa: BLE001 - e.g. no DNN for this preset
            print(f"{label}: skipped ({e})")
            continue
        results = [solver.solve(i) for i in insts]
        mse[label] = statistics.mean(r.metrics["beampattern_mse"] for r in results)
        med[label] = statistics.median(r.time_s for r in results)
        line = (f"{label:32s} MSE {mse[label]:.4f} ({mse[label] / mse['sdr']:.3f} x sdr)  "
                f"feasible {sum(r.feasible for r in results)}/{len(results)}  median time {med[label] * 1e3:.3g} ms "
                f"({med['sdr'] / med[label]:.4g} x faster than sdr)")
        if name == "gnn-ip":
            proj = [r for r in results if r.info.get("projected")]
            line += f"  projected {len(proj)}"
            if proj:
                line += f" (median projection {statistics.median(r.timings['projection_s'] for r in proj) * 1e3:.3g} ms)"
            batch = solver.solve_batch(insts)
            line += (f"  batched: {statistics.mean(r.time_s for r in batch) * 1e3:.3g} ms/instance mean "
                     f"({med['sdr'] / statistics.median(r.time_s for r in batch):.4g} x, median), "
                     f"feasible {sum(r.feasible for r in batch)}/{len(batch)}")
        print(line, flush=True)
