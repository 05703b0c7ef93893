"""Solves with a time limit (a spec's ``timeout_s``), each in a child process that can be killed.

A solver hung in C code (a conic solver, a BLAS call, a regular expression) ignores signals
and Python-level timeouts, so a time-limited solve runs in a separate Python process: one
persistent child per thread of the process that runs the trial (the sweep's main process,
a pool worker or a Dask worker thread; a Dask worker is a daemon process, which may not use
:mod:`multiprocessing`, so the child is started with :mod:`subprocess`). The child draws the
trial's instance, signals that it is about to solve, solves and sends the row back. The clock
starts at that signal, so interpreter start-up, imports and the instance draw are not counted
(set-up inside the solve, e.g. a learned solver loading its model, is: once per child).
When the limit passes, the child's whole process group is killed (``SIGKILL``), the row is
recorded as ``TIMEOUT`` and a fresh child is started in the background for the next solve.
A child that dies by itself gives an ``ERROR`` row. Solves without a limit never come here.

The child imports the module that defines the solver's class (and sees the parent's
``sys.path``), so a solver registered by any importable module works; one defined in a
script run as ``__main__`` does not. A child exits when its parent goes away: its job pipe
closes (idle child) or, on Linux, the kernel kills it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import math
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

TIMEOUT = "TIMEOUT"  # isac.solvers.base.Status.TIMEOUT (not imported: this module stays torch-free)
STARTUP_LIMIT_S = 600.0
"""Longest wait for a child to start, import the solver and draw the instance (not counted in the limit)."""

_HEADER = struct.Struct("!Q")


def _send(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv(stream) -> Any:
    """One message, or ``None`` at end of stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    size = _HEADER.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class SolverProcess:
    """A persistent child process that runs one time-limited solve at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._inbox: queue.Queue = queue.Queue()

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the isac package
        code = (f"import sys; sys.path.insert(0, {root!r}); "
                "from isac.experiments.isolate import child_main; child_main()")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=os.name == "posix",  # its own process group: a kill takes its children too
        )
        self._inbox = inbox = queue.Queue()
        stdout = self._proc.stdout

        def pump() -> None:  # a reader thread, so that the parent can wait with a timeout on any OS
            while True:
                try:
                    msg = _recv(stdout)
                except Exception:  # noqa: BLE001 - a broken pipe is the child's death, reported below
                    msg = None
                inbox.put(msg)
                if msg is None:
                    return

        threading.Thread(target=pump, daemon=True, name="isac-solver-child-reader").start()

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        proc.wait()

    def _wait(self, limit_s: float) -> Any:
        try:
            return self._inbox.get(timeout=limit_s)
        except queue.Empty:
            return TimeoutError

    def solve(self, job: dict[str, Any], timeout_s: float) -> tuple[str, Any]:
        """Run ``job`` in the child: ``("row", row)``, ``("timeout", elapsed_s)`` or ``("died", message)``."""
        for attempt in (1, 2):  # an idle child may have died (e.g. killed for memory): start another once
            if self._proc is None or self._proc.poll() is not None:
                self.kill()
                self._start()
            assert self._proc is not None
            try:
                _send(self._proc.stdin, job)
                break
            except OSError:
                if attempt == 2:
                    return "died", self._death("before the solve")
                self.kill()
        started = self._wait(STARTUP_LIMIT_S)
        if started is TimeoutError:
            self.kill()
            return "died", f"the solver process did not start within {STARTUP_LIMIT_S:g} s"
        if started is None:
            return "died", self._death("before the solve")
        if started[0] == "row":  # the instance or the solver could not be set up: an ERROR row
            return "row", started[1]
        t0 = time.perf_counter()
        done = self._wait(timeout_s)
        if done is TimeoutError:
            elapsed = time.perf_counter() - t0
            self.kill()
            self._start()  # warm up the next child while the sweep goes on
            return "timeout", elapsed
        if done is None:
            return "died", self._death("during the solve")
        return "row", done[1]

    def _death(self, when: str) -> str:
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        how = "" if code is None else f" (signal {-code})" if code < 0 else f" (exit code {code})"
        return f"the solver process died {when}{how}"


_local = threading.local()
_all: list[SolverProcess] = []
_all_lock = threading.Lock()


def solver_process() -> SolverProcess:
    """This thread's child (started on first use)."""
    proc = getattr(_local, "proc", None)
    if proc is None:
        proc = _local.proc = SolverProcess()
        with _all_lock:
            _all.append(proc)
    return proc


def close_all() -> None:
    """Stop every child started by this process (idle children only wait for their next job)."""
    with _all_lock:
        procs = list(_all)
    for p in procs:
        p.kill()


atexit.register(close_all)


def timeout_row(base: dict[str, Any], metrics: list[str], elapsed_s: float, limit_s: float) -> dict[str, Any]:
    return {**base, "status": TIMEOUT, "message": f"time limit of {limit_s:g} s exceeded; the solve was stopped",
            "iterations": 0, "time_s": float(elapsed_s),
            "metrics": {**{m: math.nan for m in metrics}, "feasible": False}}


# --- the child ----------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed even while hung in C code
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:  # other systems: best effort (needs the GIL)
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def child_main() -> None:
    """Loop: read a job, draw the instance, send ``("started",)``, solve, send ``("row", row)``."""
    _die_with_parent(int(sys.argv[1]))
    # The pipes get private descriptors; a solver that prints writes to stderr, reads nothing.
    jobs = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    import importlib

    from isac.experiments import runner
    from isac.scenario import problems  # noqa: F401 - torch and the presets: loaded while the child waits
    from isac.solvers import registry  # noqa: F401

    while True:
        job = _recv(jobs)
        if job is None:
            return
        for p in job["sys_path"]:
            if p not in sys.path:
                sys.path.append(p)
        task, solver = job["task"], job["solver"]
        if task.get("limit_threads"):
            runner._limit_threads()
        try:
            if job["module"] not in sys.modules:
                importlib.import_module(job["module"])
        except Exception as e:  # noqa: BLE001 - recorded as the row's error
            _send(out, ("row", runner._error_row(task, solver["key"], job["instance_hash"],
                                                 f"solver module: {runner._one_line(e)}")))
            continue
        drawn = runner._draw(task)
        if isinstance(drawn, str):
            _send(out, ("row", runner._error_row(task, solver["key"], "", drawn)))
            continue
        _send(out, ("started",))
        _send(out, ("row", runner._solve_row(task, drawn[0], drawn[1], solver)))
