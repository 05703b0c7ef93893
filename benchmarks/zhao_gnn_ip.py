"""GNN-IP against SDR (and ZF, GNN alone, DNN) on a block of seeds of one beampattern-sinr preset,
with the shipped weights: mean MSE, feasible count, mean time, projections, and the ratio
gnn-ip / sdr (the issue's "within 15 %" check).

    .venv/bin/python benchmarks/zhao_gnn_ip.py [PRESET] [FIRST_SEED] [END_SEED]
    .venv/bin/python benchmarks/zhao_gnn_ip.py zhao 1000 1100
"""

import statistics
import sys

from isac.scenario.problems import make_preset
from isac.solvers.registry import get_solver

if __name__ == "__main__":
    preset = sys.argv[1] if len(sys.argv) > 1 else "zhao-fixed-b"
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    end = int(sys.argv[3]) if len(sys.argv) > 3 else first + 100
    insts = [make_preset("beampattern-sinr", preset, seed=s) for s in range(first, end)]
    mse = {}
    for name in ("sdr", "zf", "gnn", "dnn", "gnn-ip"):
        solver = get_solver("beampattern-sinr", name)
        results = [solver.solve(i) for i in insts]
        mse[name] = statistics.mean(r.metrics["beampattern_mse"] for r in results)
        projected = sum(bool(r.info.get("projected")) for r in results)
        print(f"{name:7s} MSE {mse[name]:.4f}  feasible {sum(r.feasible for r in results)}/{len(results)}  "
              f"time {statistics.mean(r.time_s for r in results):.4f} s"
              + (f"  projected {projected}" if name == "gnn-ip" else ""), flush=True)
    print(f"{preset} seeds {first}-{end - 1}: gnn-ip / sdr = {mse['gnn-ip'] / mse['sdr']:.3f}")
