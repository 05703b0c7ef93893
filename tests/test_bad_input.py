"""Bad input, every family (issue 18): a generated corpus of malformed instance and solution files.

For each family, the preset instance and a solution written by ``isac solve --out`` are
mutated key by key (the JSON tree is walked): delete the key, add an unknown key, replace
the value by a wrong type (string, list, dict, null), change a list's length (one row
fewer, one more, a ragged row), put NaN, +Inf, -Inf or 1e308 into a number; the whole file
is also truncated at a few offsets and given non-UTF-8 bytes. ``isac solve`` (a fast
solver per family) and ``isac evaluate`` then run in-process on each mutated file.

A refusal must be exit code 2, at most 3 lines on stderr starting with ``error:``, no
traceback, nothing on stdout and no ``--out`` file; a key-level refusal names the key (or
an enclosing key). A mutation may also be accepted (a harmless change): then the exit
code is 0 and every number printed is finite.

The whole corpus runs by default: about 3,000 CLI runs (2,364 on instance files, 640 on
result files), ~45 s of CPU on 2 cores. ``ISAC_BAD_INPUT_SAMPLE=N`` keeps at most N cases per
(family, command, mutation kind), drawn with a fixed seed, for a quicker look.

The last tests check the final guards behind the file checks: a non-finite metric makes
``isac evaluate`` refuse (exit 2) and ``isac solve`` report NUMERICAL_ERROR with null in place
of the number; preset parameters (``-p``) meet the same bounds as files.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from helpers import run_cli
from isac.solvers.base import Solver, Status

SAMPLE = int(os.environ.get("ISAC_BAD_INPUT_SAMPLE", "0") or 0)
"""0: every case; N > 0: at most N cases per (family, command, mutation kind)."""

FAMILIES: dict[str, tuple[str, list[str]]] = {
    # family -> (fast solver, its options); every instance comes from the family's `small` preset
    "crlb-sumrate": ("zf", []),
    "beampattern-sinr": ("zf", []),
    "multibs-association": ("ao", ["-o", "max_iterations=2"]),
    "bs-selection": ("scheme2", []),
    "coop-localization": ("pdpg", ["-o", "starts=1", "-o", "max_iterations=20"]),
}

UNKNOWN_KEY = "zz_not_a_key"
BAD_STRING = "oops"
NUMBERS = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf, "1e308": 1e308}
KINDS = ("delete", "unknown", "type:string", "type:list", "type:dict", "type:null", "len:-1", "len:+1", "ragged",
         *(f"number:{n}" for n in NUMBERS), "truncate", "non-utf8")


@dataclass(frozen=True)
class Mutation:
    kind: str
    path: tuple  # of dict keys; () for whole-file mutations
    names: tuple[str, ...]  # dotted keys, any of which the error message may name
    at: float = 0.0  # whole-file mutations: where in the file, as a fraction of its length

    @property
    def label(self) -> str:
        return f"{self.kind}@{'.'.join(map(str, self.path)) or f'<file:{self.at:g}>'}"


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _names(path: tuple) -> tuple[str, ...]:
    """The key and every enclosing key, dotted (``H.re`` -> ``H.re``, ``H``)."""
    return tuple(_dotted(path[:i]) for i in range(len(path), 0, -1))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _first_leaf(value) -> tuple:
    """Index path of the first number inside nested lists (``()`` for a scalar)."""
    idx: tuple = ()
    while isinstance(value, list) and value:
        idx += (0,)
        value = value[0]
    return idx


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _key_paths(obj, prefix=()):
    """Every dict key of the JSON tree (lists are arrays: not descended into)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _key_paths(v, prefix + (k,))


def _dict_paths(obj, prefix=()):
    if isinstance(obj, dict):
        yield prefix
        for k, v in obj.items():
            yield from _dict_paths(v, prefix + (k,))


def mutations(obj: dict[str, Any]) -> list[Mutation]:
    """Every mutation of ``obj`` (see the module docstring), in a fixed order."""
    out: list[Mutation] = []
    for path in _dict_paths(obj):
        out.append(Mutation("unknown", path, (_dotted(path + (UNKNOWN_KEY,)),)))
    for path in _key_paths(obj):
        value = _get(obj, path)
        names = _names(path)
        out.append(Mutation("delete", path, names))
        for t in ("string", "list", "dict", "null"):
            out.append(Mutation(f"type:{t}", path, names))
        if isinstance(value, list) and value:
            out.append(Mutation("len:-1", path, names))
            out.append(Mutation("len:+1", path, names))
            if isinstance(value[0], list) and value[0]:
                out.append(Mutation("ragged", path, names))
        leaf = _get(value, _first_leaf(value)) if isinstance(value, list) else value
        if _is_number(leaf):
            for n in NUMBERS:
                out.append(Mutation(f"number:{n}", path, names))
    for frac in (0.0, 0.3, 0.5, 0.97):
        out.append(Mutation("truncate", (), (), at=frac))
    for frac in (0.0, 0.5):
        out.append(Mutation("non-utf8", (), (), at=frac))
    return out


def _wrong_type(value, t: str):
    if t == "string":
        return BAD_STRING
    if t == "list":
        return [[BAD_STRING]] if isinstance(value, list) else [1.0]
    if t == "dict":
        return {BAD_STRING: 1.0}
    return None


def apply(obj: dict[str, Any], m: Mutation) -> bytes:
    """The bytes of the mutated file."""
    if m.kind in ("truncate", "non-utf8"):
        text = json.dumps(obj).encode()
        cut = int(len(text) * m.at)
        if m.kind == "truncate":
            return text[:cut]
        return text[:cut] + b"\xff\xfe\xc3(" + text[cut:]
    out = copy.deepcopy(obj)
    if m.kind == "unknown":
        _get(out, m.path)[UNKNOWN_KEY] = 1.0
        return json.dumps(out).encode()
    parent, key = _get(out, m.path[:-1]), m.path[-1]
    value = parent[key]
    if m.kind == "delete":
        del parent[key]
    elif m.kind.startswith("type:"):
        parent[key] = _wrong_type(value, m.kind.split(":")[1])
    elif m.kind == "len:-1":
        value.pop()
    elif m.kind == "len:+1":
        value.append(copy.deepcopy(value[-1]))
    elif m.kind == "ragged":
        value[0].pop()
    elif m.kind.startswith("number:"):
        x = NUMBERS[m.kind.split(":")[1]]
        idx = _first_leaf(value) if isinstance(value, list) else ()
        if idx:
            _get(value, idx[:-1])[idx[-1]] = x
        else:
            parent[key] = x
    return json.dumps(out, allow_nan=True).encode()  # NaN / Infinity as Python's json writes them


# --- fixtures ------------------------------------------------------------------------


def _with_optional_keys(fam: str, inst: dict[str, Any], sol: dict[str, Any]) -> dict[str, Any]:
    """The preset's instance plus the optional keys it leaves out (set to harmless values), so that
    their validation is mutated too."""
    inst = copy.deepcopy(inst)
    p = inst["params"]
    if fam == "crlb-sumrate":
        p["element_order"] = "first-major"
        inst["W0"] = sol["W"]
    elif fam == "beampattern-sinr":
        p["spacing_wavelengths"] = 0.5
    elif fam == "multibs-association":
        p["bandwidth_hz"] = 1.0
        inst["W0"] = sol["W"]
    elif fam == "coop-localization":
        p["spacing_wavelengths"] = 0.5
        p["speb_model"] = "exact"
        inst["H_estimate"] = copy.deepcopy(inst["H"])
        inst["target_position_estimate_m"] = [x + 1.0 for x in inst["target_position_m"]]
        inst["W0"] = sol["W"]
    return inst


@pytest.fixture(scope="module")
def base_files(tmp_path_factory):
    """family -> (instance dict, solution dict): the `small` preset as `isac instance` writes it (plus the
    optional keys) and the result file `isac solve --out` writes for it."""
    from isac.scenario.problems import instance_from_dict, make_preset, save_instance
    from isac.solvers.registry import get_solver

    root = tmp_path_factory.mktemp("bad-input-base")
    out = {}
    for fam, (solver, _) in FAMILIES.items():
        path = root / f"{fam}.json"
        save_instance(path, make_preset(fam, "small", 0))
        res = get_solver(fam, solver, _options(fam)).solve(make_preset(fam, "small", 0))
        assert res.feasible, (fam, res.message)
        sol_obj = json.loads(json.dumps(res.to_dict(), allow_nan=False))
        inst_obj = _with_optional_keys(fam, json.loads(path.read_text()), sol_obj)
        instance_from_dict(inst_obj, fam)  # still valid
        out[fam] = (inst_obj, sol_obj)
    return out


def _options(fam: str) -> dict[str, str]:
    opts = FAMILIES[fam][1]
    return dict(o.split("=", 1) for o in opts[1::2])


def _finite_json(text: str) -> bool:
    """stdout parses as JSON and holds no NaN / Infinity."""
    def refuse(token):
        raise ValueError(token)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


SOLUTION_KEYS = ("C", "S", "W", "Rs", "receiver", "association")


def _names_key(line: str, key: str) -> bool:
    """``key`` appears in ``line`` as a whole key (``H`` in ``H.re: ...``, not in ``Hz`` or ``alpha.H``)."""
    return re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", line) is not None


def check_run(code: int, out: str, err: str, m: Mutation, *, out_file: Path | None, other_names=()) -> str | None:
    """None if the run obeys the rules, else what went wrong."""
    if "Traceback" in err or "Traceback" in out:
        return f"traceback: {err.strip().splitlines()[-1] if err.strip() else out[-200:]}"
    if code == 0:
        if out_file is not None and not out_file.exists():
            return "exit 0 without writing the --out file"
        if not _finite_json(out):
            return f"exit 0 with a non-finite or unparsable output: {out[:300]!r}"
        if out_file is not None and out_file.exists() and not _finite_json(out_file.read_text()):
            return "exit 0 with a non-finite --out file"
        return None
    if code != 2:
        return f"exit {code}: {err.strip()[:300]}"
    lines = err.strip().splitlines()
    if not lines or len(lines) > 3 or not lines[0].startswith("error:"):
        return f"refusal not one 'error:' line: {err[:300]!r}"
    if out.strip():
        return f"refusal printed on stdout: {out[:200]!r}"
    if out_file is not None and out_file.exists():
        return "refusal wrote the --out file"
    names = m.names + tuple(other_names)
    if m.names and not any(_names_key(lines[0], n) for n in names):
        return f"message does not name any of {names}: {lines[0]}"
    return None


def _sample(cases: list, key, seed: int) -> list:
    """At most :data:`SAMPLE` cases per ``key(case)`` (all when SAMPLE is 0), drawn with a fixed seed."""
    if SAMPLE <= 0:
        return cases
    groups: dict[Any, list] = {}
    for c in cases:
        groups.setdefault(key(c), []).append(c)
    rng = random.Random(seed)
    return [c for k in sorted(groups, key=str) for c in (groups[k] if len(groups[k]) <= SAMPLE
                                                         else rng.sample(groups[k], SAMPLE))]


def instance_cases(base, fam: str) -> list[tuple[str, Mutation]]:
    """(command, mutation) for every mutation of ``fam``'s instance file, under solve and evaluate."""
    cases = [(cmd, m) for m in mutations(base[fam][0]) for cmd in ("solve", "evaluate")]
    return _sample(cases, lambda c: (c[0], c[1].kind), seed=18)


def solution_cases(base, fam: str) -> list[Mutation]:
    """Every mutation of the result file ``isac solve --out`` wrote for ``fam``: of its solution keys, and of
    the extras ``evaluate`` ignores (``metrics``, ``trace``, ...) at the top level only (what lies inside
    them is ignored alike)."""
    cases = [m for m in mutations(base[fam][1]) if len(m.path) <= 1 or m.path[0] in SOLUTION_KEYS]
    return _sample(cases, lambda m: m.kind, seed=19)


def test_corpus_covers_every_family_and_kind(base_files):
    for fam in FAMILIES:
        for cmd in ("solve", "evaluate"):
            kinds = {m.kind for c, m in instance_cases(base_files, fam) if c == cmd}
            assert kinds == set(KINDS), (fam, cmd, set(KINDS) - kinds)
        kinds = {m.kind for m in solution_cases(base_files, fam)}
        assert kinds == set(KINDS), (fam, set(KINDS) - kinds)
        solution_keys = {m.path[0] for m in solution_cases(base_files, fam) if m.path and m.kind == "number:nan"}
        assert solution_keys & set(SOLUTION_KEYS), fam


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_instance_mutations(fam, base_files, tmp_path, capsys, monkeypatch):
    inst_obj, sol_obj = base_files[fam]
    sol = tmp_path / "solution.json"
    sol.write_text(json.dumps(sol_obj))
    failures, runs = [], 0
    for i, (cmd, m) in enumerate(instance_cases(base_files, fam)):
        inst = tmp_path / f"i{i}.json"
        inst.write_bytes(apply(inst_obj, m))
        out_file = None
        if cmd == "solve":
            out_file = tmp_path / f"r{i}.json"
            args = ["solve", fam, "--instance", inst, "--solver", FAMILIES[fam][0], *FAMILIES[fam][1],
                    "--out", out_file]
            other = ()
        else:
            args = ["evaluate", fam, "--instance", inst, "--solution", sol]
            other = SOLUTION_KEYS  # an accepted instance of another size no longer fits the solution
        code, out, err = run_cli(args, capsys, monkeypatch)
        runs += 1
        why = check_run(code, out, err, m, out_file=out_file, other_names=other)
        if why:
            failures.append(f"{fam} {cmd} {m.label}: {why}")
    assert runs >= 2 * len(KINDS)  # every kind under both commands (see the coverage test)
    assert not failures, f"{len(failures)} of {runs} runs failed:\n" + "\n".join(failures)


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_solution_mutations(fam, base_files, tmp_path, capsys, monkeypatch):
    inst_obj, sol_obj = base_files[fam]
    inst = tmp_path / "instance.json"
    inst.write_text(json.dumps(inst_obj))
    failures, runs = [], 0
    for i, m in enumerate(solution_cases(base_files, fam)):
        sol = tmp_path / f"s{i}.json"
        sol.write_bytes(apply(sol_obj, m))
        code, out, err = run_cli(["evaluate", fam, "--instance", inst, "--solution", sol], capsys, monkeypatch)
        runs += 1
        why = check_run(code, out, err, m, out_file=None)
        if why:
            failures.append(f"{fam} evaluate {m.label} (solution file): {why}")
    assert not failures, f"{len(failures)} of {runs} runs failed:\n" + "\n".join(failures)


# --- the final guards: a non-finite metric is NUMERICAL_ERROR (solve) or a refusal (evaluate) -----------


def test_evaluate_refuses_a_non_finite_metric(base_files, tmp_path, capsys, monkeypatch):
    """W = 0 passes the file checks but makes 003's FIM singular: tr(F^-1) = inf is not printed."""
    inst_obj, sol_obj = base_files["crlb-sumrate"]
    inst, sol = tmp_path / "i.json", tmp_path / "s.json"
    inst.write_text(json.dumps(inst_obj))
    W = sol_obj["W"]
    sol.write_text(json.dumps({"W": {"re": [[0.0] * len(r) for r in W["re"]], "im": [[0.0] * len(r) for r in W["im"]]}}))
    code, out, err = run_cli(["evaluate", "crlb-sumrate", "--instance", inst, "--solution", sol], capsys, monkeypatch)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1 and "crlb_trace" in err, err


def _register(monkeypatch, cls):
    from isac.solvers import registry

    monkeypatch.setitem(registry._SOLVERS, ("crlb-sumrate", cls.name), cls)


@dataclass
class _NanPoint(Solver):
    """Claims convergence at a point holding a NaN."""

    name: ClassVar[str] = "test-nan-point"
    problems: ClassVar[tuple[str, ...]] = ("crlb-sumrate",)

    def _make(self, inst):
        W = torch.zeros(inst.num_tx, inst.num_streams, dtype=torch.complex128)
        W[0, 0] = math.nan
        return W

    def _solve(self, inst):
        return Status.CONVERGED, "closed form", {"W": self._make(inst)}, [{"objective": math.nan}], 1


@dataclass
class _HugePoint(_NanPoint):
    """Claims convergence at a finite point whose power (1e400 W) overflows."""

    name: ClassVar[str] = "test-overflowing-metric"

    def _make(self, inst):
        W = torch.zeros(inst.num_tx, inst.num_streams, dtype=torch.complex128)
        W[0, 0] = 1e200
        return W


@pytest.mark.parametrize("kind", ["nan-point", "overflowing-metric"])
def test_solve_turns_non_finite_into_numerical_error(kind, base_files, tmp_path, capsys, monkeypatch):
    """A solver's NaN point, or a finite point whose metrics overflow (power 1e400), is NUMERICAL_ERROR;
    stdout and the --out file stay strict JSON (null for the numbers), the NaN point is not written."""
    cls = _NanPoint if kind == "nan-point" else _HugePoint
    _register(monkeypatch, cls)
    inst, res = tmp_path / "i.json", tmp_path / "r.json"
    inst.write_text(json.dumps(base_files["crlb-sumrate"][0]))
    code, out, err = run_cli(["solve", "crlb-sumrate", "--instance", inst, "--solver", cls.name, "--out", res],
                             capsys, monkeypatch)
    assert code == 0, err
    assert _finite_json(out) and _finite_json(res.read_text())
    printed, saved = json.loads(out), json.loads(res.read_text())
    assert printed["status"] == saved["status"] == "NUMERICAL_ERROR"
    assert printed["metrics"]["feasible"] is False
    if kind == "nan-point":
        assert "W" not in saved and "W" in printed["message"]
    else:
        assert "non-finite metrics" in printed["message"] and printed["metrics"]["power_w"] is None and "W" in saved


def test_magnitude_bounds_are_shared_by_every_getter():
    """The documented bounds, at and just past the edge, for each typed getter of Fields."""
    from isac.scenario.io import MAX_DECIBELS, MAX_INTEGER, MAX_MAGNITUDE, MIN_POSITIVE, Fields, InstanceError

    ok = Fields({"x": MAX_MAGNITUDE, "db": MAX_DECIBELS, "p": MIN_POSITIVE, "n": MAX_INTEGER,
                 "a": [[1.0, -MAX_MAGNITUDE]], "c": {"re": [MAX_MAGNITUDE], "im": [0]}})
    assert ok.number("x") == MAX_MAGNITUDE and ok.number("db", decibels=True) == MAX_DECIBELS
    assert ok.number("p", exclusive_minimum=0.0) == MIN_POSITIVE and ok.integer("n") == MAX_INTEGER
    assert ok.real_array("a", (1, 2)).shape == (1, 2) and ok.complex_array("c", (1,)).shape == (1,)
    bad = Fields({"x": 1.01 * MAX_MAGNITUDE, "db": MAX_DECIBELS + 1, "p": MIN_POSITIVE / 2, "n": MAX_INTEGER + 1,
                  "a": [[1.0, 1e101]], "c": {"re": [0.0], "im": [-1e300]}, "s": ["1.5"], "b": [True],
                  "z": None, "big": 10**400, "k": {"re": [1.0], "im": [0.0], "extra": 1}})
    for call, key in [(lambda: bad.number("x"), "x"), (lambda: bad.number("db", decibels=True), "db"),
                      (lambda: bad.number("p", exclusive_minimum=0.0), "p"), (lambda: bad.integer("n"), "n"),
                      (lambda: bad.real_array("a"), "a"), (lambda: bad.complex_array("c"), "c"),
                      (lambda: bad.real_array("s"), "s"), (lambda: bad.real_array("b"), "b"),
                      (lambda: bad.real_array("z"), "z"), (lambda: bad.number("big"), "big"),
                      (lambda: bad.real_array("big"), "big"), (lambda: bad.complex_array("k"), "k.extra")]:
        with pytest.raises(InstanceError) as e:
            call()
        assert str(e.value).startswith(f"{key}:") and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("fam, preset, param, key", [
    ("crlb-sumrate", "small", "p_max_dbm=1e308", "params.p_max_dbm"),
    ("beampattern-sinr", "small", "noise_w=1e-320", "params.noise_w"),
    ("multibs-association", "li", "noise_dbm=1e5", "params.noise_comm_dbm"),
    ("bs-selection", "small", "sinr_min_db=1e5", "params.sinr_min_db"),
    ("coop-localization", "small", "p_max_dbm=1e308", "params.p_max_dbm"),
])
def test_preset_parameters_meet_the_file_bounds(fam, preset, param, key, tmp_path, capsys, monkeypatch):
    """`solve --preset -p NAME=VALUE` refuses what the same instance as a file would be refused for."""
    res = tmp_path / "r.json"
    code, out, err = run_cli(["solve", fam, "--preset", preset, "-p", param, "--solver", FAMILIES[fam][0],
                              *FAMILIES[fam][1], "--out", res], capsys, monkeypatch)
    assert code == 2 and not out and not res.exists(), (code, err)
    assert len(err.strip().splitlines()) == 1 and _names_key(err, key), err
