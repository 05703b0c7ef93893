"""Conic solves through CVXPY: one chain of solver attempts for every SDP in the library.

CVXPY is imported lazily (inside :func:`solve_chain`); callers build the problem.
A chain is tried in order until an attempt gives a definite status (optimal,
optimal_inaccurate or infeasible). Callers re-check every extracted point with the
metrics package and treat a failed chain as NUMERICAL_ERROR, never as infeasible.
"""

from __future__ import annotations

from typing import Any

CHAIN: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    # Clarabel without equilibration or chordal decomposition (as measured before this module); its
    # default static regularisation (1e-8) stopped at iteration 1 on some of our scaled SDPs, 1e-7
    # solved them. Then Clarabel with its equilibration on; SCS last.
    "CLARABEL": (("CLARABEL", {"equilibrate_enable": False, "chordal_decomposition_enable": False,
                               "static_regularization_constant": 1e-7}),
                 ("CLARABEL", {"chordal_decomposition_enable": False}),
                 ("SCS", {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000})),
    "SCS": (("SCS", {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000}),),
}


def solve_chain(prob, solver: str, start: int = 0) -> tuple[str, str, int]:
    """Solve with the first attempt of ``CHAIN[solver]`` (from ``start``) that gives a definite
    status; (status, attempt name, attempt index or -1 when none did)."""
    import warnings

    import cvxpy as cp

    st, used = "solver_error", ""
    chain = CHAIN.get(solver, ((solver, {}),))
    for i in range(start, len(chain)):
        name, opts = chain[i]
        used = f"{name}#{i + 1}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # warm_start=False: otherwise CVXPY reuses the cached solver with the previous attempt's settings.
                prob.solve(solver=name, warm_start=False, **opts)
            st = prob.status
        except (cp.error.SolverError, ArithmeticError, ValueError) as e:
            st = f"solver_error ({type(e).__name__})"
            continue
        if st in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE, cp.INFEASIBLE):
            return st, used, i
    return st, used, -1
