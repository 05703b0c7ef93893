"""The solver index matches what the solver modules register, and a solve imports only what it needs."""

from __future__ import annotations

import json
import subprocess
import sys

from isac.solvers import registry


def test_index_matches_the_registrations_and_defaults():
    """In a fresh interpreter (other tests register solvers of their own)."""
    code = ("import json\nfrom isac.solvers import registry as r\nfound = {}\n"
            "for (p, n), c in r.all_solvers().items():\n    found.setdefault(p, {})[n] = c.__module__\n"
            "print(json.dumps([found, r._DEFAULTS]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    found, defaults = json.loads(out.stdout)
    assert found == registry.SOLVER_INDEX
    assert defaults == registry.DEFAULT_SOLVERS


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_a_sca_solve_does_not_import_cvxpy_or_the_other_solvers():
    mods = _modules_after(
        "from isac.scenario.problems import make_preset\n"
        "from isac.solvers.registry import default_solver, get_solver\n"
        "inst = make_preset('crlb-sumrate', 'small', 0)\n"
        "get_solver('crlb-sumrate', default_solver('crlb-sumrate'), {'max_iterations': 3}).solve(inst)")
    assert "isac.solvers.fang_sca" in mods
    assert not {"cvxpy", "isac.solvers.fang_sdr", "isac.solvers.lian_learned", "isac.learning.lian"} & mods


def test_cli_module_imports_no_solver_and_no_cvxpy():
    mods = _modules_after("import isac.cli")
    assert "cvxpy" not in mods and not any(m.startswith("isac.solvers.") and m not in
                                           ("isac.solvers.base", "isac.solvers.registry") for m in mods), \
        sorted(m for m in mods if m.startswith("isac.solvers.") or m == "cvxpy")


def test_solves_run_on_one_thread_and_restore_the_callers_setting():
    """Solver.solve and every solve_batch run on one torch thread whatever the caller set (small problems
    only slow down in the thread pool), and the caller's setting comes back afterwards."""
    import torch

    from isac.scenario.problems import make_preset
    from isac.solvers.fang_sca import SCA

    seen = []

    class Probe(SCA):
        def _solve(self, inst):
            seen.append(torch.get_num_threads())
            return super()._solve(inst)

        def solve_batch(self, instances):
            seen.append(torch.get_num_threads())
            return super().solve_batch(instances)

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inst = make_preset("crlb-sumrate", "small", 0)
        solver = Probe(max_iterations=3)
        solver.solve(inst)
        solver.solve_batch([inst, inst])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    assert seen and set(seen) == {1}
