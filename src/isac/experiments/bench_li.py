"""000's association benchmark: ``exact`` vs ``brute-force`` vs the MILP reference on the same SINR matrices.

The matrices are 000's (P2) inputs on preset draws: the single-user MRT SNRs
:math:`P_t\\|\\mathbf h_{k,i}\\|^2/\\sigma_i^2` of `li` networks (K <= 5, N as given) and of
`li-table3` (K = 10, N = 40) -- the first association step of the alternating optimisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

BRUTE_FORCE_LIMIT = 2_000_000
"""Largest K^N timed with ``brute-force``."""
MILP_TIME_LIMIT_S = 300.0
"""HiGHS time limit of the MILP reference (it is the slow side of the comparison)."""


def association_matrix(k: int, n: int, seed: int):
    """The K x N SNR matrix of a preset draw (``li``, or ``li-table3`` when ``li`` cannot place K BSs)."""
    import numpy as np

    from isac.scenario.problems import make_preset

    try:
        inst = make_preset("multibs-association", "li", seed, num_bs=k, num_users=n)
    except ValueError:
        inst = make_preset("multibs-association", "li-table3", seed, num_bs=k, num_users=n)
    return inst.p_max_w.numpy()[:, None] * (np.abs(inst.H.numpy()) ** 2).sum(axis=1) / inst.noise_comm_w


def bench_li_association(
    sizes: Sequence[tuple[int, int]] = ((3, 10), (4, 10), (5, 20), (10, 40)),
    instances: int = 3,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Rows ``{K, N, seed, method, time_s, objective, agrees}`` (``agrees``: objective equals ``exact``'s to 1e-9)."""
    from isac.solvers.li_association import associate

    rows = []
    for k, n in sizes:
        for seed in range(instances):
            S = association_matrix(k, n, seed)
            methods = ["exact", "milp"] + (["brute-force"] if k**n <= BRUTE_FORCE_LIMIT else [])
            found = {}
            for m in methods:
                t0 = time.perf_counter()
                res = associate(S, m, **({"time_limit_s": MILP_TIME_LIMIT_S} if m == "milp" else {}))
                found[m] = (time.perf_counter() - t0, res.objective)
            ref = found["exact"][1]
            for m, (t, obj) in found.items():
                rows.append({"K": k, "N": n, "seed": seed, "method": m, "time_s": t, "objective": obj,
                             "agrees": abs(obj - ref) <= 1e-9 * max(1.0, abs(ref))})
            echo(f"K={k} N={n} seed {seed}: " + ", ".join(f"{m} {t:.3f} s" for m, (t, _) in found.items()))
    return rows
