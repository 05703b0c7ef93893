"""Crash-safe result store: one SQLite file per sweep.

Tables:

* ``manifest(key, value)``: the spec text and its hash, package version, git
  hash (when run from a checkout), library versions, root seed, creation time.
* ``results``: one row per (point, trial, solver) with the point's parameters,
  the trial seed, a hash of the instance (so one can check that every solver
  saw the same instance), status, message, iterations, time and the metrics
  as JSON.

Every row is written in its own transaction in WAL mode with
``synchronous=FULL``: a process killed at any moment (even ``kill -9``) leaves
every committed row intact and no partial row, so a restart computes only what
is missing. A write that fails (disk full, a read-only file or folder) is a
one-line :class:`StoreError`; the failed transaction is rolled back, so the
store keeps every row committed before it.

One writer at a time: :meth:`ResultStore.open` holds an exclusive lock on
``<store>.lock`` (``flock``, released by the kernel when the process ends, even
by ``kill -9``, so a lock is never stale) until the store is closed; a second
sweep of the same store is refused with a message naming the holder's PID.
Readers (``isac results``, ``report``) take no lock.

A path that is not a result store (a folder, a text file, another program's
SQLite file, a corrupt or truncated file, a store of a newer format) is
refused with a one-line error before anything is written to it. An absent
or empty file (e.g. a creation killed before its first write) starts a new
store.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import socket
import sqlite3
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from isac import __version__
from isac.experiments.spec import SpecError, SweepSpec, parse_spec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    spec_hash TEXT NOT NULL,
    point INTEGER NOT NULL,
    trial INTEGER NOT NULL,
    solver TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    instance_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    iterations INTEGER NOT NULL,
    time_s REAL NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (point, trial, solver)
);
"""

ROW_FIELDS = ("point", "trial", "solver", "params", "seed", "instance_hash", "status", "message",
              "iterations", "time_s", "metrics")

STORE_FORMAT = "1"
"""Layout of the tables; recorded in the manifest as ``store_format`` (stores from before it have none)."""

_TABLES = {"manifest": ("key", "value"), "results": ("spec_hash", *ROW_FIELDS)}
_SQLITE_MAGIC = b"SQLite format 3\x00"


QUICK_MARKER = "# isac reproduce mode: quick"
"""Last line of a spec text stored by ``isac reproduce --quick``."""


class StoreError(ValueError):
    """A store that cannot be used as asked (wrong spec, not a store, in use, not writable); one-line message."""


def _write_failed(path: Path, e: BaseException) -> StoreError:
    text = ((e.strerror or str(e)) if isinstance(e, OSError) else str(e)).strip()
    reason = text.splitlines()[0] if text else type(e).__name__
    return StoreError(f"store {str(path)!r}: cannot write ({reason}); the rows stored so far are intact; "
                      "free disk space or make the folder writable, then rerun the same command to continue")


def inspect_store(path: str | Path) -> str:
    """``"absent"``, ``"empty"`` (no file content or no tables: a new store) or ``"store"``.

    Reads only (the SQLite file is opened read-only, without side files when it has no
    ``-wal``); raises :class:`StoreError` with a one-line message for anything else.
    """
    p = Path(path)
    where = f"store {str(p)!r}"
    if p.is_dir():
        raise StoreError(f"{where}: is a folder, not a result store; give a file path with --store")
    if not p.exists():
        return "absent"
    if not p.is_file():
        raise StoreError(f"{where}: not a regular file")
    try:
        with p.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise StoreError(f"{where}: cannot read ({e.strerror or e})") from None
    if not head:
        return "empty"
    if head != _SQLITE_MAGIC:
        raise StoreError(f"{where}: not a result store (not an SQLite file); it was left unchanged")
    # Without a -wal file there is nothing beyond the main file: "immutable" reads it creating no side files.
    wal = p.with_name(p.name + "-wal").exists()
    uri = p.resolve().as_uri() + ("?mode=ro" if wal else "?immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        try:
            objects = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
            names = [n for t, n in objects if t == "table"]
            quoted = {n: '"' + n.replace('"', '""') + '"' for n in names}
            columns = {n: tuple(c[1] for c in conn.execute(f"PRAGMA table_info({quoted[n]})")) for n in names}
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            man = dict(conn.execute("SELECT key, value FROM manifest").fetchall()) if "manifest" in names else {}
            rows = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] if "results" in names else 0
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{where}: unreadable or corrupt SQLite file ({e}); it was left unchanged") from None
    if check != "ok":
        raise StoreError(f"{where}: corrupt SQLite file (quick_check: {check}); it was left unchanged")
    if not objects:
        return "empty"
    if set(names) != set(_TABLES) or any(columns[n] != cols for n, cols in _TABLES.items()):
        raise StoreError(f"{where}: not a result store of `isac sweep` (tables: {', '.join(sorted(names))}); "
                         "it was left unchanged")
    fmt = man.get("store_format", STORE_FORMAT)
    if fmt != STORE_FORMAT:
        raise StoreError(f"{where}: store format {fmt!r}, but isac {__version__} reads format {STORE_FORMAT!r}; "
                         "use the isac version that wrote it; it was left unchanged")
    if not man and rows:
        raise StoreError(f"{where}: {rows} rows but no manifest; not usable as a store; it was left unchanged")
    return "store" if man else "empty"


class _WriterLock:
    """An exclusive, non-blocking lock on ``<store>.lock`` (``flock``: released when the process dies)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = store.with_name(store.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _write_failed(self.store, e) from None
        try:
            if not _try_lock(fd):
                holder = (os.read(fd, 200).decode(errors="replace").strip().splitlines() or ["holder unknown"])[0]
                raise StoreError(f"store {str(self.store)!r} is in use by another `isac sweep` ({holder}); "
                                 "wait for it to finish or give another --store")
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            info = f"pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode()
            os.ftruncate(fd, 0)
            os.write(fd, info)
        except OSError as e:
            os.close(fd)
            raise _write_failed(self.store, e) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        # The file stays: unlinking a lock file while another process opens it would let two hold "the" lock.
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock (not supported there)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _git_hash() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for lib in ("torch", "numpy", "scipy", "cvxpy", "scs", "clarabel", "pydantic", "matplotlib", "dask", "distributed"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    return out


def _json_default(x: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/Inf floats become strings "nan"/"inf"/"-inf" and are read back as floats."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, Mapping):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _unclean(v: Any) -> Any:
    if v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, dict):
        return {k: _unclean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unclean(x) for x in v]
    return v


class ResultStore:
    """A sweep's SQLite store. Use :meth:`open` (creates or checks the manifest)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: _WriterLock | None = None) -> None:
        self.path = path
        self._conn = conn
        self._lock = lock

    # --- opening ------------------------------------------------------------------
    @classmethod
    def _connect(cls, path: Path) -> sqlite3.Connection:
        """A connection to a path that :func:`inspect_store` accepted."""
        try:
            conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        except sqlite3.Error as e:
            raise _write_failed(path, e) from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            conn.close()
            raise _write_failed(path, e) from None
        return conn

    @classmethod
    def open(cls, path: str | Path, spec: SweepSpec, spec_text: str, new: bool = False) -> ResultStore:
        """Open ``path`` for ``spec``: create it, or reuse it when it was made by the same spec.

        A store made by a spec that computes different numbers is refused unless
        ``new`` is true, in which case the old file is moved aside to
        ``<path>.<timestamp>.bak`` and a fresh store is started. Holds the store's
        writer lock until :meth:`close`. A path that is not a store, a store in use by
        another process or one that cannot be written is a :class:`StoreError`.
        """
        p = Path(path)
        kind = inspect_store(p)  # before anything is written: a path that is not a store stays as it is
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _write_failed(p, e) from None
        lock = _WriterLock(p)
        lock.acquire()
        try:
            if kind != "absent" and new:
                stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                p.replace(p.with_name(f"{p.name}.{stamp}.bak"))
                for suffix in ("-wal", "-shm"):
                    side = p.with_name(p.name + suffix)
                    if side.exists():
                        side.replace(p.with_name(f"{p.name}.{stamp}.bak{suffix}"))
            store = cls(p, cls._connect(p), lock)
        except OSError as e:
            lock.release()
            raise _write_failed(p, e) from None
        except BaseException:
            lock.release()
            raise
        try:
            man = store.manifest()
            if not man:
                store._write_manifest(spec, spec_text)
            elif man.get("spec_hash") != spec.compute_hash():
                raise StoreError(
                    f"store {str(p)!r} was made by a different spec (problem, preset, seed, trials, fixed, axes, "
                    "solvers or metrics changed); use --new to start over (the old store is kept as .bak) "
                    "or give another --store"
                )
            else:
                # Same numbers; plots, labels and text may have changed: keep the newest text.
                store._set("spec_text", spec_text)
        except sqlite3.Error as e:
            store.close()
            raise _write_failed(p, e) from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_existing(cls, path: str | Path) -> tuple[ResultStore, SweepSpec]:
        """Open a store written by a sweep, with the spec recorded in it."""
        p = Path(path)
        if not p.exists():
            raise StoreError(f"store {str(p)!r}: no such file")
        if inspect_store(p) != "store":
            raise StoreError(f"store {str(p)!r}: no manifest (not written by `isac sweep`)")
        store = cls(p, cls._connect(p))
        text = store.manifest().get("spec_text")
        if text is None:
            store.close()
            raise StoreError(f"store {str(p)!r}: no manifest (not written by `isac sweep`)")
        try:
            spec = parse_spec(text, f"store {p.name}", check_registry=False)
            if QUICK_MARKER in text:  # written by `isac reproduce --quick`: the quick overrides apply
                spec = spec.with_mode("quick")
        except SpecError as e:
            store.close()
            raise StoreError(str(e)) from None
        return store, spec

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- manifest -----------------------------------------------------------------
    def _set(self, key: str, value: str) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO manifest(key, value) VALUES (?, ?)", (key, value))

    def _write_manifest(self, spec: SweepSpec, spec_text: str) -> None:
        entries = {
            "spec_text": spec_text,
            "spec_hash": spec.compute_hash(),
            "store_format": STORE_FORMAT,
            "spec_name": spec.name,
            "seed": str(spec.seed),
            "isac_version": __version__,
            "git_hash": _git_hash() or "",
            "libraries": json.dumps(_library_versions(), sort_keys=True),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for k, v in entries.items():
                self._conn.execute("INSERT OR REPLACE INTO manifest(key, value) VALUES (?, ?)", (k, v))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def manifest(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM manifest").fetchall())

    # --- rows -----------------------------------------------------------------------
    def done_keys(self) -> set[tuple[int, int, str]]:
        return {(p, t, s) for p, t, s in self._conn.execute("SELECT point, trial, solver FROM results")}

    def count_status(self, statuses: Iterable[str]) -> int:
        """Number of stored rows whose status is one of ``statuses``."""
        st = list(statuses)
        q = f"SELECT COUNT(*) FROM results WHERE status IN ({', '.join('?' * len(st))})"
        return int(self._conn.execute(q, st).fetchone()[0])

    def write_row(self, spec_hash: str, row: Mapping[str, Any]) -> None:
        """Insert one row in its own transaction (an existing row is never overwritten)."""
        values = (
            spec_hash, int(row["point"]), int(row["trial"]), str(row["solver"]),
            json.dumps(_clean(row["params"]), sort_keys=True, default=_json_default), int(row["seed"]),
            str(row["instance_hash"]), str(row["status"]), str(row["message"]), int(row["iterations"]),
            float(row["time_s"]), json.dumps(_clean(row["metrics"]), sort_keys=True, default=_json_default),
        )
        try:
            with self._conn:
                self._conn.execute(
                    "INSERT OR IGNORE INTO results(spec_hash, point, trial, solver, params, seed, instance_hash, "
                    "status, message, iterations, time_s, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
        except sqlite3.Error as e:  # disk full, read-only: the transaction is rolled back
            raise _write_failed(self.path, e) from None

    def rows(self) -> list[dict[str, Any]]:
        """All rows ordered by point, trial, solver; params and metrics decoded."""
        cur = self._conn.execute(
            "SELECT point, trial, solver, params, seed, instance_hash, status, message, iterations, time_s, metrics "
            "FROM results ORDER BY point, trial, solver"
        )
        out = []
        for rec in cur:
            d = dict(zip(ROW_FIELDS, rec))
            d["params"] = _unclean(json.loads(d["params"]))
            d["metrics"] = _unclean(json.loads(d["metrics"]))
            out.append(d)
        return out


def tidy_rows(rows: Iterable[Mapping[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """Flat records: axis values, trial, seed, solver, status, ..., one column per metric."""
    out = []
    for r in rows:
        rec: dict[str, Any] = {"point": r["point"]}
        for a in spec.axes:
            rec[a.name] = r["params"].get(a.name)
        rec["trial"] = r["trial"]
        if spec.slots > 1:
            rec["slot"] = spec.trial_slot(int(r["trial"]))[1]
        rec.update({"seed": r["seed"], "solver": r["solver"], "status": r["status"],
                    "message": r["message"], "iterations": r["iterations"], "time_s": r["time_s"],
                    "instance_hash": r["instance_hash"]})
        for m in spec.metrics:
            rec[m] = r["metrics"].get(m)
        if "feasible" not in spec.metrics:
            rec["feasible"] = r["metrics"].get("feasible")
        out.append(rec)
    return out
