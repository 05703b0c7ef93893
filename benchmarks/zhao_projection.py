"""004's projection (29)-(31): our ADMM solver against the CVXPY program (Clarabel) on the same inputs,
the infeasible outputs of 004's GNN (shipped weights) on a block of seeds. Prints the median time of
each, their ratio, the largest relative difference of the lifted distance, and the statuses.

    .venv/bin/python benchmarks/zhao_projection.py [PRESET] [FIRST_SEED] [END_SEED]
    .venv/bin/python benchmarks/zhao_projection.py zhao-fixed-a 1000 1100
"""

import statistics
import sys
import time

import torch

from isac.metrics.evaluate import evaluate
from isac.scenario.problems import make_preset
from isac.solvers.registry import get_solver
from isac.solvers.zhao_learned import _forward_one
from isac.solvers.zhao_projection import project_feasible_fast
from isac.solvers.zhao_sdr import project_feasible


def _distance(C, S, Ct, St):
    """The objective of (29) between the input and a projected point (lifted user and total covariances)."""
    users = sum(float((torch.outer(C[:, l], C[:, l].conj()) - torch.outer(Ct[:, l], Ct[:, l].conj())).abs().pow(2).sum())
                for l in range(C.shape[1]))
    R, Rt = C @ C.conj().T + S @ S.conj().T, Ct @ Ct.conj().T + St @ St.conj().T
    return users + float((R - Rt).abs().pow(2).sum())


if __name__ == "__main__":
    torch.set_num_threads(1)
    preset = sys.argv[1] if len(sys.argv) > 1 else "zhao-fixed-a"
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    end = int(sys.argv[3]) if len(sys.argv) > 3 else first + 100
    gnn = get_solver("beampattern-sinr", "gnn-ip", {"model": "gnn"})
    t_ours, t_cvx, rel, statuses = [], [], [], []
    for seed in range(first, end):
        inst = make_preset("beampattern-sinr", preset, seed=seed)
        model, _, _ = gnn.resolve(inst)
        C, S, _ = _forward_one(model, inst, "cpu")
        if evaluate(inst, {"C": C, "S": S})["feasible"]:
            continue
        t0 = time.perf_counter()
        ours = project_feasible_fast(inst, C, S)
        t1 = time.perf_counter()
        ref = project_feasible(inst, C, S, backend="CLARABEL")
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_cvx.append(t2 - t1)
        d_o, d_r = _distance(C, S, *ours[:2]), _distance(C, S, *ref[:2])
        rel.append((d_o - d_r) / d_r)
        statuses.append((ours[2].value, ref[2].value, bool(evaluate(inst, {"C": ours[0], "S": ours[1]})["feasible"])))
    print(f"{preset} seeds {first}-{end - 1}: {len(t_ours)} infeasible GNN outputs projected")
    print(f"ours (ADMM):        median {statistics.median(t_ours) * 1e3:.2f} ms, max {max(t_ours) * 1e3:.2f} ms")
    print(f"CVXPY + Clarabel:   median {statistics.median(t_cvx) * 1e3:.2f} ms")
    print(f"median ratio CVXPY / ours: {statistics.median(c / o for c, o in zip(t_cvx, t_ours)):.1f}")
    print(f"(ours - CVXPY) / CVXPY of the distance (29): min {min(rel):.2e}, max {max(rel):.2e}")
    print(f"statuses (ours, CVXPY, ours feasible): {sorted(set(statuses))}")
