"""001's benchmark: time per instance, SDPs and power of every method against ``exhaustive``, on the same instances.

Instances are preset ``xu`` draws (S = 4 BSs, N = 8, Gamma = 8 dB, epsilon = 1 m^2) with K users.
Every row reports the method's power relative to the certified optimum of the same instance
(``gap_to_optimum``; None where either is infeasible) and the number of SDPs it solved. The
summary rows (``method = "exhaustive"``, ``what = "summary"``) say, per K, the slowest exhaustive
solve and whether it stayed under a minute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

XU_METHODS = ("exhaustive", "penalty-sdr", "scheme1", "scheme2", "scheme3")
XU_COLUMNS = [("num_users", "K", "{}"), ("seed", "seed", "{}"), ("method", "method", "{}"),
              ("status", "status", "{}"), ("time_s", "time [s]", "{:.3g}"), ("sdps", "SDPs", "{}"),
              ("power_w", "power [W]", "{:.5g}"), ("gap_to_optimum", "power / optimum - 1", "{:.3%}"),
              ("receiver", "receiver", "{}"), ("under_a_minute", "exhaustive under 1 min (summary)", "{}")]


def bench_xu(num_users: Sequence[int] = (2, 3, 5), instances: int = 2, methods: Sequence[str] = XU_METHODS,
             echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Rows ``{num_users, seed, method, status, time_s, sdps, power_w, gap_to_optimum, receiver}``."""
    from isac.scenario.problems import make_preset
    from isac.solvers.base import one_thread
    from isac.solvers.registry import get_solver, solvers_for

    available = solvers_for("bs-selection")
    rows: list[dict[str, Any]] = []
    with one_thread():  # restores the caller's thread count afterwards
        for k in num_users:
            slowest = 0.0
            for seed in range(instances):
                inst = make_preset("bs-selection", "xu", seed, num_users=k)
                found: dict[str, dict[str, Any]] = {}
                for m in methods:
                    if m not in available:
                        continue
                    t0 = time.perf_counter()
                    res = get_solver("bs-selection", m).solve(inst)
                    dt = time.perf_counter() - t0
                    feasible = bool(res.metrics.get("feasible", False))
                    found[m] = {"num_users": k, "seed": seed, "method": m, "status": res.status.value, "time_s": dt,
                                "sdps": res.info.get("sdps"), "receiver": res.info.get("receiver"),
                                "power_w": float(res.metrics["total_power_w"]) if feasible else None}
                    if m == "exhaustive":
                        slowest = max(slowest, dt)
                opt = found.get("exhaustive", {}).get("power_w")
                for row in found.values():
                    p = row["power_w"]
                    row["gap_to_optimum"] = (p / opt - 1.0) if (p is not None and opt) else None
                    rows.append(row)
                echo(f"K={k} seed {seed}: " + ", ".join(f"{m} {r['time_s']:.1f} s" for m, r in found.items()))
            rows.append({"num_users": k, "seed": "all", "method": "exhaustive", "status": "summary",
                         "time_s": slowest, "sdps": None, "power_w": None, "receiver": None,
                         "gap_to_optimum": None, "under_a_minute": slowest < 60.0 and math.isfinite(slowest)})
    return rows
