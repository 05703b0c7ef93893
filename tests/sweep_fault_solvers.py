"""Test-only solvers for tests/test_sweep_faults.py (not a test module).

They live in an importable module, not in the test file, because sweeps run them in other
processes (the time limit's child process, Dask workers), which import the module that
registers a solver. Import it as ``sweep_fault_solvers`` (tests/ is on sys.path), never as
``tests.sweep_fault_solvers``: a second copy would register the classes twice.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import ClassVar

from isac.solvers.baselines import MRT
from isac.solvers.registry import register_solver


@dataclass
class Hang(MRT):
    """MRT after hanging for ``hang_s`` seconds: ``sleep``, a Python ``spin`` loop, or ``c`` (a regular
    expression that backtracks for ages inside the C library, holding the GIL, deaf to signals)."""

    name: ClassVar[str] = "test-hang"
    description: ClassVar[str] = "test only"
    hang_s: float = 0.0
    mode: str = "sleep"

    def _solve(self, inst):
        if self.hang_s > 0:
            if self.mode == "sleep":
                time.sleep(self.hang_s)
            elif self.mode == "spin":
                end = time.perf_counter() + self.hang_s
                while time.perf_counter() < end:
                    pass
            else:  # exponential backtracking: minutes for 40 characters, whatever hang_s says
                re.match(r"(a+)+$", "a" * 40 + "b")
        return super()._solve(inst)


@dataclass
class DieOnce(MRT):
    """MRT, except that the ``die_at``-th solve (counted across processes in ``marker_dir``) ends its
    process with ``os._exit`` (a worker killed mid-task); every other solve, retries included, works."""

    name: ClassVar[str] = "test-die-once"
    description: ClassVar[str] = "test only"
    marker_dir: str = ""
    die_at: int = 0

    def _solve(self, inst):
        if self.marker_dir:
            i = 0
            while True:  # claim the next call number atomically (O_EXCL), whatever process we are
                try:
                    os.close(os.open(os.path.join(self.marker_dir, f"call-{i}"), os.O_CREAT | os.O_EXCL))
                    break
                except FileExistsError:
                    i += 1
            if i == self.die_at:
                os._exit(3)
        return super()._solve(inst)


register_solver(Hang)
register_solver(DieOnce)
