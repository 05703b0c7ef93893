"""Solvers: one contract, ``solver.solve(instance) -> Result``.

See :mod:`isac.solvers.base` for the contract and :mod:`isac.solvers.registry`
for the per-problem registry.
"""

from isac.solvers.base import Result, Solver, Status
from isac.solvers.registry import get_solver, solvers_for

__all__ = ["Result", "Solver", "Status", "get_solver", "solvers_for"]
