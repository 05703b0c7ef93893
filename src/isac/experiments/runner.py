"""Run a sweep: every (point, trial) instance drawn once and solved by every solver.

Seeds: trial ``t`` uses the integer seed drawn from child ``t`` of
``numpy.random.SeedSequence(spec.seed).spawn(trials)``, at every point (common
random numbers: the curves of one plot compare the same channel draws). Results
therefore depend only on the spec, never on the number of workers, their order
or on which trials were already in the store. A row's seed reproduces its
instance with ``isac solve PROBLEM --preset P --seed S`` plus the point's preset
parameters as ``-p NAME=VALUE``. A spec with ``slots = T`` groups the trials into
trajectories: trial ``t`` uses the seed of child ``t // T`` and ``-p slot=t % T``.

Execution back-ends, all running the same task function :func:`run_trial`:

* ``workers=1``: in this process;
* ``workers=N``: a local process pool (spawned processes, torch and BLAS
  limited to one thread each);
* ``dask_address``: an existing Dask distributed scheduler; ``dask_local=N``:
  a ``LocalCluster`` of N single-threaded worker processes.

The parent process is the only writer of the store; a row is committed as soon
as its trial finishes. A solver that raises is recorded with status ``ERROR``
and its one-line message; it never stops the sweep. A solver entry with
``timeout_s`` runs each solve in a child process (:mod:`isac.experiments.isolate`)
that is killed when the limit passes; the row is then ``TIMEOUT``. The same
happens in every back-end: the limit is enforced where the trial runs. On Dask,
the tasks of a worker that dies are rerun elsewhere (the store keeps one row per
key), so a lost worker loses and repeats no row.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from isac.experiments.spec import SweepSpec
from isac.experiments.store import ResultStore

ERROR = "ERROR"
FAILED_STATUSES = ("ERROR", "INFEASIBLE", "NUMERICAL_ERROR", "TIMEOUT")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def trial_seeds(root_seed: int, trials: int) -> list[int]:
    """Integer seeds of the trials: one per child of ``SeedSequence(root_seed).spawn(trials)``.

    Child ``t`` does not depend on ``trials``, so a quick run's trials are a
    prefix of the full run's.
    """
    children = np.random.SeedSequence(root_seed).spawn(trials)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


def instance_hash(instance) -> str:
    text = json.dumps(instance.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _limit_threads() -> None:
    import torch

    for var in _THREAD_ENV:
        os.environ[var] = "1"
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _base(task: dict[str, Any]) -> dict[str, Any]:
    return {"point": task["point"], "trial": task["trial"], "params": task["params"], "seed": task["seed"]}


def _error_row(task: dict[str, Any], solver_key: str, ihash: str, message: str) -> dict[str, Any]:
    return {**_base(task), "solver": solver_key, "instance_hash": ihash, "status": ERROR, "message": message,
            "iterations": 0, "time_s": 0.0, "metrics": {**{m: math.nan for m in task["metrics"]}, "feasible": False}}


def _draw(task: dict[str, Any]) -> tuple[Any, str] | str:
    """The task's instance and its hash, or the one-line reason it could not be drawn."""
    from isac.scenario.problems import make_preset

    try:
        inst = make_preset(task["problem"], task["preset"], task["seed"], **task["preset_kwargs"])
        return inst, instance_hash(inst)
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        return f"instance: {_one_line(e)}"


def _import_solver_module(s: dict[str, Any]) -> None:
    module = s.get("module")
    if module and module != "__main__" and module not in sys.modules:
        importlib.import_module(module)


def _solve_row(task: dict[str, Any], inst: Any, ihash: str, s: dict[str, Any]) -> dict[str, Any]:
    """Solve ``inst`` with solver entry ``s`` in this process; the row (never raises)."""
    from isac.solvers.registry import get_solver

    try:
        _import_solver_module(s)
        result = get_solver(task["problem"], s["name"], s["options"]).solve(inst)
        metrics: dict[str, Any] = {}
        missing = []
        for m in task["metrics"]:
            source, _, key = m.partition(".")
            if source in ("info", "timings") and key:
                # Solver facts (e.g. info.projected, timings.projection_s): solvers without
                # them (a closed form has no projection) record NaN, not an error.
                metrics[m] = getattr(result, source).get(key, math.nan)
            elif m in result.metrics:
                metrics[m] = result.metrics[m]
            else:
                metrics[m] = math.nan
                missing.append(m)
        metrics["feasible"] = bool(result.metrics.get("feasible", False))
        if task.get("record_trace"):
            metrics["trace_objective"] = [float(t.get("objective", math.nan)) for t in result.trace]
        message = result.message
        status = result.status.value
        # A solver that returned no point (e.g. INFEASIBLE: a sensing target is unreachable)
        # has no metrics to report; its own status and reason are the row's outcome.
        if missing and result.solution:
            status = ERROR
            message = f"metrics not reported by the evaluator: {', '.join(missing)}"
        return {**_base(task), "solver": s["key"], "instance_hash": ihash, "status": status, "message": message,
                "iterations": result.iterations, "time_s": result.time_s, "metrics": metrics}
    except Exception as e:  # noqa: BLE001 - a failing solver is data, not a crash
        return _error_row(task, s["key"], ihash, _one_line(e))


def _solve_row_limited(task: dict[str, Any], ihash: str, s: dict[str, Any]) -> dict[str, Any]:
    """Solve in this thread's child process, killed after ``s["timeout_s"]`` seconds (see :mod:`.isolate`)."""
    from isac.experiments import isolate
    from isac.solvers.registry import get_solver

    try:
        _import_solver_module(s)
        module = type(get_solver(task["problem"], s["name"], s["options"])).__module__
    except Exception as e:  # noqa: BLE001 - as in the unlimited path
        return _error_row(task, s["key"], ihash, _one_line(e))
    if module == "__main__":
        return _error_row(task, s["key"], ihash, f"solver {s['name']!r} is defined in __main__; a solver with "
                          "timeout_s runs in a child process and must be defined in an importable module")
    limit = float(s["timeout_s"])
    job = {"task": task, "solver": {k: v for k, v in s.items() if k != "timeout_s"}, "module": module,
           "instance_hash": ihash, "sys_path": list(sys.path)}
    kind, value = isolate.solver_process().solve(job, limit)
    if kind == "row":
        return value
    if kind == "timeout":
        return {**isolate.timeout_row(_base(task), task["metrics"], value, limit), "solver": s["key"],
                "instance_hash": ihash}
    return _error_row(task, s["key"], ihash, value)


def run_trial(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Draw one instance and solve it with each requested solver; never raises.

    ``task`` keys: ``problem``, ``preset``, ``preset_kwargs``, ``point``, ``params``,
    ``trial``, ``seed``, ``metrics``, ``solvers`` (list of ``{key, name, options, module}``,
    ``module`` the one that registers the solver, imported first; plus ``timeout_s`` for a
    solver with a time limit: it then runs in a child process), ``limit_threads``.
    """
    if task.get("limit_threads"):
        _limit_threads()
    drawn = _draw(task)
    if isinstance(drawn, str):
        return [_error_row(task, s["key"], "", drawn) for s in task["solvers"]]
    inst, ihash = drawn
    return [_solve_row_limited(task, ihash, s) if s.get("timeout_s") else _solve_row(task, inst, ihash, s)
            for s in task["solvers"]]


def plan(spec: SweepSpec, done: set[tuple[int, int, str]]) -> tuple[list[dict[str, Any]], int, int]:
    """Tasks for the missing rows; returns (tasks, rows to compute, rows already stored)."""
    from isac.solvers.registry import solvers_for

    slots = [spec.trial_slot(t) for t in range(spec.trials)]
    seeds = trial_seeds(spec.seed, slots[-1][0] + 1)
    # The module that registers each solver: a worker process imports it, so that solvers
    # registered outside the package (a plugin, a test) run on pool and Dask workers too.
    registered = solvers_for(spec.problem)
    modules = {s.name: registered[s.name].__module__ for s in spec.solvers if s.name in registered}
    tasks = []
    todo = reused = 0
    for pi, point in enumerate(spec.points()):
        for t, (si, slot) in enumerate(slots):
            seed = seeds[si]
            kwargs = spec.preset_kwargs(point) if slot is None else {**spec.preset_kwargs(point), "slot": slot}
            here = [s for s in spec.solvers if s.runs_at(point)]
            missing = [s for s in here if (pi, t, s.key) not in done]
            reused += len(here) - len(missing)
            if not missing:
                continue
            todo += len(missing)
            tasks.append({
                "problem": spec.problem, "preset": spec.preset, "preset_kwargs": kwargs,
                "point": pi, "params": point, "trial": t, "seed": seed, "metrics": list(spec.metrics),
                "record_trace": spec.record_trace,
                "solvers": [{"key": s.key, "name": s.name, "options": dict(s.options), "module": modules.get(s.name),
                             **({"timeout_s": s.timeout_s} if s.timeout_s is not None else {})} for s in missing],
            })
    return tasks, todo, reused


@dataclass
class SweepSummary:
    name: str
    store: str
    points: int
    trials: int
    solvers: int
    computed: int
    reused: int
    failures: int
    wall_s: float

    def line(self) -> str:
        return (f"sweep {self.name}: {self.points} points x {self.trials} trials x {self.solvers} solvers; "
                f"{self.computed} rows computed, {self.reused} reused; {self.failures} failed; "
                f"wall {self.wall_s:.1f} s; store {self.store}")


def _local_results(tasks: list[dict[str, Any]], workers: int) -> Iterator[list[dict[str, Any]]]:
    if workers <= 1:
        for task in tasks:
            yield run_trial(task)
        return
    with single_threaded_pool(workers) as pool:
        pending: set[Future] = {pool.submit(run_trial, {**t, "limit_threads": True}) for t in tasks}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                yield f.result()


@contextlib.contextmanager
def single_threaded_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes whose torch/BLAS start with one thread each."""
    saved = {v: os.environ.get(v) for v in _THREAD_ENV}
    for v in _THREAD_ENV:  # spawned children read these before importing torch/BLAS
        os.environ[v] = "1"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def _dask_results(tasks: list[dict[str, Any]], address: str | None, local_workers: int) -> Iterator[list[dict[str, Any]]]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError("Dask is not installed: pip install 'isac[cluster]'") from None
    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise RuntimeError(f"cannot reach the Dask scheduler at {address!r}: {_one_line(e)}") from None
    try:
        futures = client.map(run_trial, [{**t, "limit_threads": True} for t in tasks], pure=False)
        task_of = {f.key: t for f, t in zip(futures, tasks)}
        # A worker that dies mid-task (killed, out of memory, a crashing solver) has its tasks rerun
        # on the others by the scheduler; a task that kills every worker it runs on
        # (distributed.scheduler.allowed-failures) is recorded as ERROR rows and the sweep goes on.
        for f in as_completed(futures):
            try:
                rows = f.result()
            except Exception as e:  # noqa: BLE001 - run_trial never raises: this is the cluster's failure
                task = task_of[f.key]
                rows = [_error_row(task, s["key"], "", f"Dask: {_one_line(e)}") for s in task["solvers"]]
            f.release()
            yield rows
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_sweep(
    spec: SweepSpec,
    spec_text: str,
    store_path: str | Path,
    *,
    workers: int = 1,
    dask_address: str | None = None,
    dask_local: int | None = None,
    new: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SweepSummary:
    """Compute every missing row of ``spec`` into ``store_path``.

    ``progress(done, total)`` is called after each finished trial with the
    number of rows computed so far in this run and the number to compute.
    """
    t0 = time.perf_counter()
    with ResultStore.open(store_path, spec, spec_text, new=new) as store:
        tasks, todo, reused = plan(spec, store.done_keys())
        if dask_address is not None or dask_local is not None:
            results = _dask_results(tasks, dask_address, dask_local or 1)
        else:
            results = _local_results(tasks, min(workers, max(1, len(tasks))))
        spec_hash = spec.compute_hash()
        done = 0
        if progress is not None:
            progress(0, todo)
        try:
            for rows in results:
                for row in rows:
                    store.write_row(spec_hash, row)
                done += len(rows)
                if progress is not None:
                    progress(done, todo)
        finally:  # also on a failed write: stop the workers and the solver child processes now
            results.close()
            if any(s.timeout_s is not None for s in spec.solvers):
                from isac.experiments import isolate

                isolate.close_all()
        failures = store.count_status(FAILED_STATUSES)
    return SweepSummary(
        name=spec.name, store=str(store_path), points=len(spec.points()), trials=spec.trials,
        solvers=len(spec.solvers), computed=done, reused=reused, failures=failures,
        wall_s=time.perf_counter() - t0,
    )
