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
is missing.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
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


QUICK_MARKER = "# isac reproduce mode: quick"
"""Last line of a spec text stored by ``isac reproduce --quick``."""


class StoreError(ValueError):
    """A store that cannot be used as asked (wrong spec, not a store); one-line message."""


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

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # --- opening ------------------------------------------------------------------
    @classmethod
    def _connect(cls, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"store {str(path)!r}: not a result store ({e})") from None
        return conn

    @classmethod
    def open(cls, path: str | Path, spec: SweepSpec, spec_text: str, new: bool = False) -> ResultStore:
        """Open ``path`` for ``spec``: create it, or reuse it when it was made by the same spec.

        A store made by a spec that computes different numbers is refused unless
        ``new`` is true, in which case the old file is moved aside to
        ``<path>.<timestamp>.bak`` and a fresh store is started.
        """
        p = Path(path)
        if p.exists() and new:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            p.replace(p.with_name(f"{p.name}.{stamp}.bak"))
            for suffix in ("-wal", "-shm"):
                side = p.with_name(p.name + suffix)
                if side.exists():
                    side.replace(p.with_name(f"{p.name}.{stamp}.bak{suffix}"))
        p.parent.mkdir(parents=True, exist_ok=True)
        store = cls(p, cls._connect(p))
        man = store.manifest()
        if not man:
            store._write_manifest(spec, spec_text)
        elif man.get("spec_hash") != spec.compute_hash():
            store.close()
            raise StoreError(
                f"store {str(p)!r} was made by a different spec (problem, preset, seed, trials, fixed, axes, "
                "solvers or metrics changed); use --new to start over (the old store is kept as .bak) "
                "or give another --store"
            )
        else:
            # Same numbers; plots, labels and text may have changed: keep the newest text.
            store._set("spec_text", spec_text)
        return store

    @classmethod
    def open_existing(cls, path: str | Path) -> tuple[ResultStore, SweepSpec]:
        """Open a store written by a sweep, with the spec recorded in it."""
        p = Path(path)
        if not p.is_file():
            raise StoreError(f"store {str(p)!r}: no such file")
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
        self._conn.close()

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
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO results(spec_hash, point, trial, solver, params, seed, instance_hash, status, "
                "message, iterations, time_s, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

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
