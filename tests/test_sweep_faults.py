"""Faults in sweeps: hung solvers (timeout_s), a second sweep of one store, stores that are not
stores, a Dask worker killed mid-sweep, a disk that fills up or a store that cannot be written."""

import errno
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sweep_fault_solvers  # noqa: F401 - registers test-hang and test-die-once (see that module)
from helpers import run_cli

from isac.experiments import analysis, isolate
from isac.experiments import store as store_mod
from isac.experiments.runner import run_sweep
from isac.experiments.spec import SpecError, parse_spec
from isac.experiments.store import ResultStore, StoreError

BASE = """
name = "f"
problem = "crlb-sumrate"
preset = "small"
seed = 7
trials = 2
metrics = ["sum_rate_nats"]
[[axes]]
name = "p_max_dbm"
values = [0, 10]
[[solvers]]
name = "mrt"
"""

HUNG = BASE + """
[[solvers]]
name = "test-hang"
label = "stuck"
options = { hang_s = 600, mode = "c" }
timeout_s = 1
where = { p_max_dbm = [10] }
[[solvers]]
name = "test-hang"
label = "limited"
timeout_s = 60
"""


def _rows(path):
    st, _ = ResultStore.open_existing(path)
    with st:
        return st.rows()


def _keys(rows):
    return sorted((r["point"], r["trial"], r["solver"]) for r in rows)


def _grid(spec):
    return sorted((pi, t, s.key) for pi, pt in enumerate(spec.points()) for t in range(spec.trials)
                  for s in spec.solvers if s.runs_at(pt))


def _cli(capsys, monkeypatch, *args):
    code, out, err = run_cli(args, capsys, monkeypatch)
    return code, out, err.strip()


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder``: bytes and modification time (to check that nothing was touched)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


# --- timeout_s ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "true", '"10"'])
def test_timeout_s_must_be_a_positive_finite_number(value):
    with pytest.raises(SpecError) as e:
        parse_spec(BASE + f"timeout_s = {value}\n")
    assert "solvers[0].timeout_s" in str(e.value) and "positive finite" in str(e.value)
    assert "\n" not in str(e.value)


def test_timeout_s_enters_the_compute_hash_only_when_set():
    plain, limited = parse_spec(BASE), parse_spec(BASE + "timeout_s = 5\n")
    assert "timeout_s" not in plain.compute_dict()["solvers"][0]  # hashes of existing specs unchanged
    assert limited.compute_dict()["solvers"][0]["timeout_s"] == 5.0
    assert plain.compute_hash() != limited.compute_hash()


def test_a_hung_solve_is_killed_recorded_as_timeout_and_the_sweep_goes_on(tmp_path):
    spec = parse_spec(HUNG)
    t0 = time.perf_counter()
    summary = run_sweep(spec, HUNG, tmp_path / "h.db", workers=1)
    wall = time.perf_counter() - t0
    rows = _rows(tmp_path / "h.db")
    assert _keys(rows) == _grid(spec) and summary.computed == len(rows) == 10
    stuck = [r for r in rows if r["solver"] == "stuck"]
    assert len(stuck) == 2 and summary.failures == 2
    for r in stuck:  # a solve hung in C code (holding the GIL, deaf to signals) is killed after 1 s
        assert r["status"] == "TIMEOUT" and r["message"] == "time limit of 1 s exceeded; the solve was stopped"
        assert 1.0 <= r["time_s"] < 10 and math.isnan(r["metrics"]["sum_rate_nats"])
        assert r["metrics"]["feasible"] is False and r["iterations"] == 0
    assert wall < 120  # not 2 x 600 s
    # The limited solves that finish are normal rows, on the same instances as the in-process ones.
    mrt = {(r["point"], r["trial"]): r for r in rows if r["solver"] == "mrt"}
    for r in rows:
        if r["solver"] == "stuck":
            assert r["instance_hash"] == mrt[(r["point"], r["trial"])]["instance_hash"]
        if r["solver"] == "limited":
            ref = mrt[(r["point"], r["trial"])]
            assert r["status"] == "CONVERGED" and r["instance_hash"] == ref["instance_hash"]
            assert r["metrics"] == ref["metrics"]
    assert all(p._proc is None for p in isolate._all)  # no child process outlives the sweep
    assert "| stuck | TIMEOUT |" in analysis.report(rows, spec, {}, tmp_path / "rep").read_text()
    # TIMEOUT rows are rows: a rerun computes nothing.
    assert run_sweep(spec, HUNG, tmp_path / "h.db", workers=1).computed == 0


def test_trials_without_timeout_s_start_no_child_process(tmp_path, monkeypatch):
    def refuse(self):
        raise AssertionError("a child process was started for a solve without timeout_s")

    monkeypatch.setattr(isolate.SolverProcess, "_start", refuse)
    summary = run_sweep(parse_spec(BASE), BASE, tmp_path / "p.db", workers=1)
    assert summary.computed == 4 and summary.failures == 0


# --- two sweeps of one store -------------------------------------------------------------------------


def test_a_second_sweep_of_a_store_in_use_is_refused(tmp_path, capsys, monkeypatch):
    spec_file, db = tmp_path / "f.toml", tmp_path / "f.db"
    spec_file.write_text(BASE)
    holder = ResultStore.open(db, parse_spec(BASE), BASE)  # the first sweep, mid-run
    try:
        code, out, err = _cli(capsys, monkeypatch, "sweep", spec_file, "--store", db, "--workers", "1",
                              "--no-progress")
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "in use by another `isac sweep`" in err and f"pid {os.getpid()} " in err
        assert _rows(db) == []  # readers need no lock; the refused sweep wrote nothing
    finally:
        holder.close()
    code, out, err = _cli(capsys, monkeypatch, "sweep", spec_file, "--store", db, "--workers", "1", "--no-progress")
    assert code == 0 and "4 rows computed" in out


_HOLD = """
import sys, time
from isac.experiments.spec import parse_spec
from isac.experiments.store import ResultStore
text = open(sys.argv[1]).read()
store = ResultStore.open(sys.argv[2], parse_spec(text, check_registry=False), text)
print("holding", flush=True)
time.sleep(120)
"""


def test_the_lock_of_a_killed_sweep_is_not_stale(tmp_path):
    spec_file, db = tmp_path / "f.toml", tmp_path / "f.db"
    spec_file.write_text(BASE)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(spec_file), str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(StoreError, match=f"in use by another `isac sweep` \\(pid {proc.pid} "):
            run_sweep(parse_spec(BASE), BASE, db)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert (tmp_path / "f.db.lock").exists()  # left behind by kill -9, but the kernel released the lock
    assert run_sweep(parse_spec(BASE), BASE, db).computed == 4


# --- paths that are not stores --------------------------------------------------------------------


def _make_store(path):
    run_sweep(parse_spec(BASE), BASE, path)


def _not_a_store(kind: str, folder: Path) -> tuple[Path, str]:
    """A path of the given kind inside ``folder`` and the words its error must contain."""
    p = folder / "x.db"
    if kind == "folder":
        p.mkdir()
        (p / "notes.txt").write_text("other stuff\n")
        return p, "is a folder"
    if kind == "text":
        p.write_text("name,value\na,1\n")
        return p, "not an SQLite file"
    if kind == "other-sqlite":
        conn = sqlite3.connect(p)
        conn.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO results (value) VALUES ('precious')")
        conn.commit()
        conn.close()
        return p, "not a result store of `isac sweep` (tables: results)"
    if kind == "truncated":
        _make_store(p)
        data = p.read_bytes()
        for side in folder.iterdir():
            side.unlink()
        p.write_bytes(data[: len(data) // 2])
        return p, "corrupt SQLite file"
    if kind == "newer-format":
        _make_store(p)
        conn = sqlite3.connect(p)
        conn.execute("UPDATE manifest SET value = '99' WHERE key = 'store_format'")
        conn.commit()
        conn.close()
        return p, "store format '99'"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["folder", "text", "other-sqlite", "truncated", "newer-format"])
def test_a_path_that_is_not_a_store_is_refused_and_left_unchanged(kind, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    path, words = _not_a_store(kind, folder)
    spec_file = tmp_path / "f.toml"
    spec_file.write_text(BASE)
    before = _snapshot(folder)
    time.sleep(0.01)  # so that a write would show in the modification times
    for args in (("sweep", spec_file, "--store", path, "--workers", "1", "--no-progress"),
                 ("sweep", spec_file, "--store", path, "--workers", "1", "--no-progress", "--new"),
                 ("results", path), ("report", path)):
        code, _, err = _cli(capsys, monkeypatch, *args)
        assert code == 2 and len(err.splitlines()) == 1 and words in err, (args, err)
    assert _snapshot(folder) == before and set(os.listdir(folder)) == {Path(k).parts[0] for k in before}


def test_an_empty_file_starts_a_new_store(tmp_path):
    (tmp_path / "e.db").write_bytes(b"")  # e.g. a creation killed before its first write
    assert run_sweep(parse_spec(BASE), BASE, tmp_path / "e.db").computed == 4


# --- disk full, read-only -----------------------------------------------------------------------------


SIX = BASE.replace("trials = 2", "trials = 6")
MANY = BASE.replace("trials = 2", "trials = 30")  # more rows than the first pages of the file hold


def test_disk_full_mid_sweep_is_one_line_and_the_store_stays_valid(tmp_path, capsys, monkeypatch):
    spec_file, db = tmp_path / "f.toml", tmp_path / "f.db"
    spec_file.write_text(MANY)
    real_open = ResultStore.open.__func__

    def small_disk(cls, *args, **kw):  # SQLite's own "disk full" (SQLITE_FULL) once the file would grow
        st = real_open(cls, *args, **kw)
        pages = st._conn.execute("PRAGMA page_count").fetchone()[0]
        st._conn.execute(f"PRAGMA max_page_count = {pages}")
        return st

    monkeypatch.setattr(ResultStore, "open", classmethod(small_disk))
    code, out, err = _cli(capsys, monkeypatch, "sweep", spec_file, "--workers", "1", "--no-progress")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot write (database or disk is full)" in err and "rerun the same command" in err
    monkeypatch.undo()
    partial = _rows(db)  # readable, every stored row complete
    assert 0 < len(partial) < 60 and all(r["status"] == "CONVERGED" for r in partial)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert run_sweep(parse_spec(MANY), MANY, db).computed == 60 - len(partial)
    after = {(r["point"], r["trial"], r["solver"]): r for r in _rows(db)}
    assert _keys(after.values()) == _grid(parse_spec(MANY))
    assert all(after[(r["point"], r["trial"], r["solver"])] == r for r in partial)


def test_no_space_for_the_lock_file_is_one_line(tmp_path, capsys, monkeypatch):
    spec_file = tmp_path / "f.toml"
    spec_file.write_text(BASE)
    real_open = os.open

    def full(path, *args, **kw):
        if str(path).endswith(".lock"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(store_mod.os, "open", full)
    code, _, err = _cli(capsys, monkeypatch, "sweep", spec_file, "--workers", "1", "--no-progress")
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write (No space left on device)" in err, err
    assert not (tmp_path / "f.db").exists()


def test_a_read_only_store_is_one_line_and_stays_intact(tmp_path, capsys, monkeypatch):
    spec_file, db = tmp_path / "f.toml", tmp_path / "f.db"
    spec_file.write_text(SIX)
    spec = parse_spec(SIX)
    with ResultStore.open(db, spec, SIX) as st:  # a store with some rows: as a killed sweep leaves it
        from isac.experiments.runner import plan, run_trial

        for task in plan(spec, set())[0][:3]:
            for row in run_trial(task):
                st.write_row(spec.compute_hash(), row)
    before_rows = _rows(db)
    before = _snapshot(tmp_path)
    real_connect = sqlite3.connect

    def read_only(database, *args, **kw):  # the file opened read-only, as for a file without write permission
        if str(database) == str(db):
            return real_connect(f"{db.resolve().as_uri()}?mode=ro", *args, uri=True, **kw)
        return real_connect(database, *args, **kw)

    monkeypatch.setattr(store_mod.sqlite3, "connect", read_only)
    code, _, err = _cli(capsys, monkeypatch, "sweep", spec_file, "--workers", "1", "--no-progress")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot write (attempt to write a readonly database)" in err
    monkeypatch.undo()
    assert _rows(db) == before_rows and len(before_rows) == 3
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "f.db.lock"} == {k: v for k, v in before.items() if k != "f.db.lock"}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_folder_is_one_line_and_the_store_stays_intact(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    spec_file, db = tmp_path / "f.toml", folder / "f.db"
    spec_file.write_text(SIX)
    _make_store(db)  # the BASE store: a different spec, but the folder is checked first
    before = _snapshot(folder)
    folder.chmod(0o555)
    db.chmod(0o444)
    try:
        code, _, err = _cli(capsys, monkeypatch, "sweep", spec_file, "--store", db, "--workers", "1", "--no-progress")
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write" in err, err
    assert _snapshot(folder) == before and len(_rows(db)) == 4


# --- Dask ---------------------------------------------------------------------------------------------


def test_dask_worker_killed_mid_sweep_loses_and_repeats_no_row(tmp_path):
    distributed = pytest.importorskip("distributed")
    markers = tmp_path / "calls"
    markers.mkdir()
    text = BASE.replace("trials = 2", "trials = 3") + textwrap.dedent(f"""
        [[solvers]]
        name = "test-die-once"
        label = "dies"
        options = {{ marker_dir = "{markers}", die_at = 2 }}
        [[solvers]]
        name = "test-hang"
        label = "stuck"
        options = {{ hang_s = 600 }}
        timeout_s = 1
        where = {{ p_max_dbm = [10] }}
    """)
    spec = parse_spec(text)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = run_sweep(spec, text, tmp_path / "d.db", dask_address=cluster.scheduler_address)
    rows = _rows(tmp_path / "d.db")
    # The third solve of "dies" ended its worker (os._exit) mid-task; the scheduler reran that task (and any
    # finished one whose result was still held by the dead worker) elsewhere: solves repeat, rows do not.
    assert (markers / "call-2").exists() and len(list(markers.iterdir())) >= 7
    assert _keys(rows) == _grid(spec) and summary.computed == len(rows) == 15
    mrt = {(r["point"], r["trial"]): r for r in rows if r["solver"] == "mrt"}
    for r in rows:
        if r["solver"] == "dies":
            assert r["status"] == "CONVERGED" and r["metrics"] == mrt[(r["point"], r["trial"])]["metrics"]
        if r["solver"] == "stuck":  # the limit holds on Dask workers too
            assert r["status"] == "TIMEOUT" and 1.0 <= r["time_s"] < 10
    assert summary.failures == 3
