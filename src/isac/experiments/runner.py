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
and its one-line message; it never stops the sweep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
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
FAILED_STATUSES = ("ERROR", "INFEASIBLE", "NUMERICAL_ERROR")
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


def run_trial(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Draw one instance and solve it with each requested solver; never raises.

    ``task`` keys: ``problem``, ``preset``, ``preset_kwargs``, ``point``, ``params``,
    ``trial``, ``seed``, ``metrics``, ``solvers`` (list of ``{key, name, options}``),
    ``limit_threads``.
    """
    if task.get("limit_threads"):
        _limit_threads()
    from isac.scenario.problems import make_preset
    from isac.solvers.registry import get_solver

    base = {"point": task["point"], "trial": task["trial"], "params": task["params"], "seed": task["seed"]}

    def error_row(solver_key: str, ihash: str, message: str) -> dict[str, Any]:
        return {**base, "solver": solver_key, "instance_hash": ihash, "status": ERROR, "message": message,
                "iterations": 0, "time_s": 0.0,
                "metrics": {**{m: math.nan for m in task["metrics"]}, "feasible": False}}

    try:
        inst = make_preset(task["problem"], task["preset"], task["seed"], **task["preset_kwargs"])
        ihash = instance_hash(inst)
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        return [error_row(s["key"], "", f"instance: {_one_line(e)}") for s in task["solvers"]]
    rows = []
    for s in task["solvers"]:
        try:
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
            row = {**base, "solver": s["key"], "instance_hash": ihash, "status": status, "message": message,
                   "iterations": result.iterations, "time_s": result.time_s, "metrics": metrics}
        except Exception as e:  # noqa: BLE001 - a failing solver is data, not a crash
            row = error_row(s["key"], ihash, _one_line(e))
        rows.append(row)
    return rows


def plan(spec: SweepSpec, done: set[tuple[int, int, str]]) -> tuple[list[dict[str, Any]], int, int]:
    """Tasks for the missing rows; returns (tasks, rows to compute, rows already stored)."""
    slots = [spec.trial_slot(t) for t in range(spec.trials)]
    seeds = trial_seeds(spec.seed, slots[-1][0] + 1)
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
                "solvers": [{"key": s.key, "name": s.name, "options": dict(s.options)} for s in missing],
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
        for f in as_completed(futures):
            yield f.result()
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
        for rows in results:
            for row in rows:
                store.write_row(spec_hash, row)
            done += len(rows)
            if progress is not None:
                progress(done, todo)
        failures = store.count_status(FAILED_STATUSES)
    return SweepSummary(
        name=spec.name, store=str(store_path), points=len(spec.points()), trials=spec.trials,
        solvers=len(spec.solvers), computed=done, reused=reused, failures=failures,
        wall_s=time.perf_counter() - t0,
    )
