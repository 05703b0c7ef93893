"""Sweeps: spec validation, fair and deterministic execution, crash-safe store, exports, plots, reproduce."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from scipy import stats

from isac.experiments import analysis, reproduce
from isac.experiments.runner import instance_hash as runner_instance_hash
from isac.experiments.runner import run_sweep, trial_seeds
from isac.experiments.spec import SpecError, load_spec, parse_spec
from isac.experiments.store import ResultStore, StoreError
from isac.experiments.store import tidy_rows as reproduce_tidy
from isac.solvers.base import Solver
from isac.solvers.registry import register_solver

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "sweeps" / "smoke.toml"

BASE = """
name = "t"
problem = "crlb-sumrate"
preset = "small"
seed = 7
trials = 3
metrics = ["sum_rate_nats", "crlb_trace"]
[[axes]]
name = "p_max_dbm"
values = [0, 10]
[[solvers]]
name = "mrt"
[[solvers]]
name = "zf"
[[plots]]
name = "rate"
x = "p_max_dbm"
y = "sum_rate_nats"
"""


@dataclass
class _Broken(Solver):
    """A solver that always raises (to check failures are recorded, not fatal)."""

    name: ClassVar[str] = "test-broken"
    problems: ClassVar[tuple[str, ...]] = ("crlb-sumrate",)
    description: ClassVar[str] = "test only"

    def _solve(self, inst):
        raise RuntimeError("boom\nsecond line")


register_solver(_Broken)


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def _rows(path):
    st, _ = ResultStore.open_existing(path)
    with st:
        return st.rows()


# --- spec validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda s: s + "\nbogus = 1\n", "bogus"),
        (lambda s: s.replace('name = "mrt"', 'name = "nope"'), "solvers[0].name"),
        (lambda s: s.replace('name = "zf"', 'name = "zf"\noptions = { comm_power_fraction = 3 }'), "solvers[1].options"),
        (lambda s: s.replace('name = "zf"', 'name = "zf"\noptions = { bogus = 3 }'), "bogus"),
        (lambda s: s.replace('name = "p_max_dbm"', 'name = "nope"'), "axes.nope"),
        (lambda s: s.replace('x = "p_max_dbm"', 'x = "trial"'), "plots[0].x"),
        (lambda s: s.replace('y = "sum_rate_nats"', 'y = "objective"'), "plots[0].y"),
        (lambda s: s.replace("trials = 3", "trials = 0"), "trials"),
        (lambda s: s.replace('problem = "crlb-sumrate"', 'problem = "nope"'), "problem"),
        (lambda s: s.replace('preset = "small"', 'preset = "nope"'), "preset"),
        (lambda s: s.replace("seed = 7", "seed = [1"), "invalid TOML"),
        (lambda s: s + '\n[[solvers]]\nname = "mrt"\n', "label"),
    ],
)
def test_bad_spec_gives_one_line_error_naming_the_key(edit, needle):
    with pytest.raises(SpecError) as e:
        parse_spec(edit(BASE))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_smoke_spec_is_valid_and_big_enough():
    spec, _ = load_spec(SMOKE)
    assert len(spec.points()) >= 3 and spec.trials >= 4 and len(spec.solvers) >= 2


# --- execution -------------------------------------------------------------------------------


def test_trial_seeds_from_seed_sequence_and_prefix_stable():
    seeds = trial_seeds(5, 4)
    children = np.random.SeedSequence(5).spawn(4)
    assert seeds == [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]
    assert trial_seeds(5, 2) == seeds[:2] and len(set(seeds)) == 4


def test_worker_count_does_not_change_results_and_solvers_share_instances(tmp_path):
    spec, text = load_spec(SMOKE)
    s1 = run_sweep(spec, text, tmp_path / "a.db", workers=1)
    s2 = run_sweep(spec, text, tmp_path / "b.db", workers=2)
    assert s1.computed == s2.computed == len(spec.points()) * spec.trials * len(spec.solvers)
    a, b = _rows(tmp_path / "a.db"), _rows(tmp_path / "b.db")
    assert _strip(a) == _strip(b)
    by_trial = {}
    for r in a:
        by_trial.setdefault((r["point"], r["trial"]), set()).add(r["instance_hash"])
    assert all(len(h) == 1 for h in by_trial.values())
    # A row's seed and point reproduce its instance and numbers through the public API.
    from isac.scenario.problems import make_preset
    from isac.solvers.registry import get_solver
    r = a[5]
    inst = make_preset(spec.problem, spec.preset, r["seed"], **spec.preset_kwargs(r["params"]))
    again = get_solver(spec.problem, r["solver"], spec.solvers[spec.solver_keys().index(r["solver"])].options).solve(inst)
    assert again.metrics["sum_rate_nats"] == r["metrics"]["sum_rate_nats"]


DYNAMIC = """
name = "dyn"
problem = "beampattern-sinr"
preset = "zhao-dynamic"
seed = 3
trials = 5
slots = 2
metrics = ["beampattern_mse"]
[[axes]]
name = "sinr_db"
values = [4, 8]
[[solvers]]
name = "zf"
"""


def test_slots_run_trials_as_consecutive_slots_of_trajectories(tmp_path):
    from isac.scenario.problems import make_preset

    spec = parse_spec(DYNAMIC)
    assert [spec.trial_slot(t) for t in range(5)] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    run_sweep(spec, DYNAMIC, tmp_path / "d.db")
    rows = _rows(tmp_path / "d.db")
    seeds = trial_seeds(3, 3)
    assert len(rows) == 10 and [r["seed"] for r in rows[:5]] == [seeds[0], seeds[0], seeds[1], seeds[1], seeds[2]]
    for r in rows:
        inst = make_preset(spec.problem, spec.preset, r["seed"], slot=r["trial"] % 2, **spec.preset_kwargs(r["params"]))
        assert runner_instance_hash(inst) == r["instance_hash"]
    tidy = reproduce_tidy(rows, spec)
    assert [t["slot"] for t in tidy[:5]] == [0, 1, 0, 1, 0]
    text = analysis.report(rows, spec, {}, tmp_path / "rep").read_text()
    assert "5 trials per point (2 trajectories of 2 time slots and one of 1 time slot)" in text
    # slots = 1 leaves the compute hash of existing specs unchanged; slots needs a preset with `slot`.
    assert "slots" not in parse_spec(DYNAMIC.replace("slots = 2", "")).compute_dict()
    assert "slots" in spec.compute_dict()
    with pytest.raises(SpecError, match="slots: preset 'zhao-fixed-b' has no parameter 'slot'"):
        parse_spec(DYNAMIC.replace("zhao-dynamic", "zhao-fixed-b"))
    with pytest.raises(SpecError, match="slots: 'slot' is set by the runner"):
        parse_spec(DYNAMIC + "[fixed]\nslot = 1\n")


def test_rerun_computes_nothing_and_changed_spec_is_refused(tmp_path):
    spec, text = parse_spec(BASE), BASE
    first = run_sweep(spec, text, tmp_path / "s.db")
    again = run_sweep(spec, text + "\n# a comment\n", tmp_path / "s.db")
    assert first.computed == 12 and again.computed == 0 and again.reused == 12
    changed = BASE.replace("seed = 7", "seed = 8")
    with pytest.raises(StoreError, match="--new"):
        run_sweep(parse_spec(changed), changed, tmp_path / "s.db")
    fresh = run_sweep(parse_spec(changed), changed, tmp_path / "s.db", new=True)
    assert fresh.computed == 12
    assert list(tmp_path.glob("s.db.*.bak"))


def test_failures_are_recorded_and_do_not_stop_the_sweep(tmp_path):
    text = BASE.replace('[[solvers]]\nname = "zf"', '[[solvers]]\nname = "test-broken"')
    spec = parse_spec(text)
    summary = run_sweep(spec, text, tmp_path / "f.db")
    rows = _rows(tmp_path / "f.db")
    broken = [r for r in rows if r["solver"] == "test-broken"]
    assert summary.failures == len(broken) == 6
    assert all(r["status"] == "ERROR" and r["message"] == "RuntimeError: boom" for r in broken)
    assert all(r["status"] == "CONVERGED" for r in rows if r["solver"] == "mrt")


def test_infeasible_trials_are_recorded(tmp_path):
    text = textwrap.dedent("""
        name = "inf"
        problem = "beampattern-sinr"
        preset = "zhao"
        seed = 1
        trials = 2
        metrics = ["beampattern_mse", "min_sinr_db"]
        [[axes]]
        name = "sinr_db"
        values = [0, 90]
        [[solvers]]
        name = "zf"
    """)
    run_sweep(parse_spec(text), text, tmp_path / "i.db")
    rows = _rows(tmp_path / "i.db")
    status = {(r["params"]["sinr_db"], r["trial"]): r["status"] for r in rows}
    assert status[(0, 0)] == "CONVERGED" and status[(90, 0)] == "INFEASIBLE"


_KILL_SCRIPT = """
import sys, time
from dataclasses import dataclass
from typing import ClassVar
from isac.experiments.runner import run_sweep
from isac.experiments.spec import parse_spec
from isac.solvers.baselines import MRT
from isac.solvers.registry import register_solver

@dataclass
class Slow(MRT):
    name: ClassVar[str] = "test-slow"
    def _solve(self, inst):
        time.sleep(0.05)
        return super()._solve(inst)

register_solver(Slow)
text = open(sys.argv[1]).read()
run_sweep(parse_spec(text), text, sys.argv[2], workers=1)
"""


def test_kill_9_loses_nothing_and_repeats_nothing(tmp_path):
    text = BASE.replace('name = "zf"', 'name = "test-slow"').replace("trials = 3", "trials = 20")
    spec_path, db = tmp_path / "k.toml", tmp_path / "k.db"
    spec_path.write_text(text)
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(spec_path), str(db)])
    before = []
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        if db.exists():
            try:
                n = sqlite3.connect(str(db), timeout=5).execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if n >= 6:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _rows(db)
    assert 6 <= len(before) < 80, "the sweep finished before it could be killed"
    out = subprocess.run([sys.executable, str(script), str(spec_path), str(db)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    after = _rows(db)
    assert len(after) == 80
    keys = [(r["point"], r["trial"], r["solver"]) for r in after]
    assert len(set(keys)) == len(keys)
    after_by_key = {(r["point"], r["trial"], r["solver"]): r for r in after}
    for r in before:  # committed rows are untouched, timings included (nothing recomputed)
        assert after_by_key[(r["point"], r["trial"], r["solver"])] == r


def test_dask_local_cluster_gives_the_same_rows(tmp_path):
    pytest.importorskip("distributed")
    spec = parse_spec(BASE)
    run_sweep(spec, BASE, tmp_path / "local.db", workers=1)
    run_sweep(spec, BASE, tmp_path / "dask.db", dask_local=2)
    assert _strip(_rows(tmp_path / "local.db")) == _strip(_rows(tmp_path / "dask.db"))


# --- output -----------------------------------------------------------------------------------


def test_mean_ci_matches_scipy():
    vals = [1.0, 2.5, 2.0, 4.0]
    m, lo, hi = analysis.mean_ci(vals)
    ref = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert m == pytest.approx(np.mean(vals)) and (lo, hi) == pytest.approx(ref)


def test_exports_plots_and_report(tmp_path):
    spec = parse_spec(BASE)
    run_sweep(spec, BASE, tmp_path / "o.db")
    st, spec2 = ResultStore.open_existing(tmp_path / "o.db")
    with st:
        rows, man = st.rows(), st.manifest()
    csv_text = analysis.export(rows, spec2, "csv")
    assert csv_text.splitlines()[0].startswith("point,p_max_dbm,trial,seed,solver,status")
    assert len(csv_text.splitlines()) == 13
    tidy = json.loads(analysis.export(rows, spec2, "json"))
    assert {t["solver"] for t in tidy} == {"mrt", "zf"} and all("sum_rate_nats" in t for t in tidy)
    files = analysis.plot_store(rows, spec2, tmp_path / "plots")
    assert sorted(f.suffix for f in files) == [".pdf", ".png"] and all(f.stat().st_size > 1000 for f in files)
    cells = analysis.aggregate(rows, spec2, spec2.plots[0])
    mrt0 = [r["metrics"]["sum_rate_nats"] for r in rows if r["solver"] == "mrt" and r["params"]["p_max_dbm"] == 0]
    cell = next(c for c in cells if c.series == "mrt" and c.x == 0)
    assert cell.n == 3 and cell.mean == pytest.approx(np.mean(mrt0))
    path = analysis.report(rows, spec2, man, tmp_path / "rep")
    text = path.read_text()
    assert "| p_max_dbm | mrt | zf |" in text and "rate.png" in text and man["spec_hash"] in text


def test_cli_sweep_results_plot_report(tmp_path, capsys, monkeypatch):
    from helpers import run_cli

    def run(*args):
        return run_cli(args, capsys, monkeypatch)

    spec_file = tmp_path / "t.toml"
    spec_file.write_text(BASE)
    code, out, err = run("sweep", spec_file, "--workers", "1", "--no-progress")
    assert code == 0 and "12 rows computed" in out and "0 failed" in out
    code, out, _ = run("results", tmp_path / "t.db", "--format", "json")
    assert code == 0 and len(json.loads(out)) == 12
    assert run("plot", tmp_path / "t.db")[0] == 0 and (tmp_path / "t" / "rate.pdf").exists()
    assert run("report", tmp_path / "t.db")[0] == 0 and (tmp_path / "t" / "report.md").exists()
    spec_file.write_text(BASE.replace("trials = 3", "trials = 4"))
    code, _, err = run("sweep", spec_file, "--workers", "1", "--no-progress")
    assert code == 2 and "different spec" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("results", tmp_path / "missing.db")
    assert code == 2 and "no such file" in err
    code, _, err = run("reproduce", "nobody", "--quick", "--no-progress")
    assert code == 2 and "nobody" in err


def test_reproduce_quick_uses_the_quick_overrides(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "one.toml").write_text(BASE + "\n[quick]\ntrials = 1\naxes = { p_max_dbm = [10] }\n")
    reproduce.register_paper(reproduce.Paper("test-paper", "a test paper", ("one.toml",), spec_dir=specs))
    try:
        summaries = reproduce.reproduce("test-paper", "quick", tmp_path / "out", echo=lambda s: None)
    finally:
        reproduce._PAPERS.pop("test-paper")
    assert summaries[0].computed == 2
    assert (tmp_path / "out" / "t-quick" / "report.md").exists() and (tmp_path / "out" / "t-quick" / "results.csv").exists()
    assert "t-quick/report.md" in (tmp_path / "out" / "README.md").read_text()


def test_solver_where_trace_plots_and_median(tmp_path):
    text = BASE.replace('[[solvers]]\nname = "zf"', '[[solvers]]\nname = "zf"\nwhere = { p_max_dbm = [10] }')
    text = text.replace('metrics = ["sum_rate_nats", "crlb_trace"]',
                        'metrics = ["sum_rate_nats", "crlb_trace", "objective"]\nrecord_trace = true')
    text += ('\n[[plots]]\nname = "conv"\nkind = "trace"\nx = "p_max_dbm"\ny = "objective"\n'
             '\n[[plots]]\nname = "med"\nx = "p_max_dbm"\ny = "crlb_trace"\nstat = "median"\n')
    text = text.replace('[[solvers]]\nname = "mrt"', '[[solvers]]\nname = "sca"\noptions = { max_iterations = 5 }')
    spec = parse_spec(text)
    assert spec.total_rows() == 3 * 2 + 3 * 1
    s = run_sweep(spec, text, tmp_path / "w.db")
    rows = _rows(tmp_path / "w.db")
    assert s.computed == len(rows) == 9
    assert {r["params"]["p_max_dbm"] for r in rows if r["solver"] == "zf"} == {10}
    sca_rows = [r for r in rows if r["solver"] == "sca"]
    assert all(len(r["metrics"]["trace_objective"]) == r["iterations"] + 1 for r in sca_rows)
    curves = analysis.trace_curves(rows, spec, spec.plots[1])
    first = [r["metrics"]["trace_objective"][0] for r in sca_rows if r["params"]["p_max_dbm"] == 0]
    assert curves["sca, p_max_dbm=0"][0] == pytest.approx(np.mean(first))
    cells = analysis.aggregate(rows, spec, spec.plots[2])
    vals = [r["metrics"]["crlb_trace"] for r in sca_rows if r["params"]["p_max_dbm"] == 10]
    cell = next(c for c in cells if c.series == "sca" and c.x == 10)
    assert cell.mean == pytest.approx(np.median(vals))
    path = analysis.report(rows, spec, {}, tmp_path / "rep")
    assert "conv.png" in path.read_text() and (tmp_path / "rep" / "conv.pdf").exists()
    with pytest.raises(SpecError, match="record_trace"):
        parse_spec(text.replace("record_trace = true", ""))
    with pytest.raises(SpecError, match="where.nope"):
        parse_spec(text.replace("where = { p_max_dbm = [10] }", "where = { nope = [1] }"))


def test_fang_paper_specs_are_valid_in_both_modes():
    for mode in ("quick", "full"):
        specs = reproduce.paper_specs("fang", mode)
        assert len(specs) == 7
    quick = {s.name: s for s, _ in reproduce.paper_specs("fang", "quick")}
    assert quick["fang_table1_antennas"].trials < 100


def test_tradeoff_plot_uses_per_point_statistics(tmp_path):
    text = BASE + '\n[[plots]]\nname = "region"\nkind = "tradeoff"\nx = "crlb_trace"\ny = "sum_rate_nats"\nstat = "median"\n'
    spec = parse_spec(text)
    run_sweep(spec, text, tmp_path / "t.db")
    rows = _rows(tmp_path / "t.db")
    pts = analysis.tradeoff_points(rows, spec, spec.plots[1])
    assert list(pts) == ["mrt", "zf"] and len(pts["mrt"]) == 2
    params, x, y, n = pts["zf"][1]
    sel = [r for r in rows if r["solver"] == "zf" and r["params"] == params]
    assert n == 3 and params == {"p_max_dbm": 10}
    assert x == pytest.approx(np.median([r["metrics"]["crlb_trace"] for r in sel]))
    assert y == pytest.approx(np.median([r["metrics"]["sum_rate_nats"] for r in sel]))
    files = analysis.plot_store(rows, spec, tmp_path / "p")
    assert (tmp_path / "p" / "region.pdf") in files
    assert "| zf |" in analysis.report(rows, spec, {}, tmp_path / "r").read_text()
    with pytest.raises(SpecError, match="plots\\[1\\].x"):
        parse_spec(text.replace('x = "crlb_trace"', 'x = "p_max_dbm"'))


def test_quick_store_reopens_with_the_quick_spec(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "one.toml").write_text(BASE + "\n[quick]\ntrials = 1\naxes = { p_max_dbm = [10] }\n")
    reproduce.register_paper(reproduce.Paper("test-paper-2", "t", ("one.toml",), spec_dir=specs))
    try:
        reproduce.reproduce("test-paper-2", "quick", tmp_path / "out", echo=lambda s: None)
    finally:
        reproduce._PAPERS.pop("test-paper-2")
    st, spec = ResultStore.open_existing(tmp_path / "out" / "t-quick.db")
    st.close()
    assert spec.trials == 1 and spec.total_rows() == 2


SERIES = """
name = "s"
problem = "beampattern-sinr"
preset = "small"
seed = 11
trials = 3
metrics = ["beampattern", "grid_deg", "timings.solve_s", "info.projected", "sinr_met"]
[[axes]]
name = "sinr_db"
values = [0, 60]
[[solvers]]
name = "zf"
[[plots]]
name = "pattern"
kind = "series"
x = "grid_deg"
y = "beampattern"
where = { sinr_db = 0 }
[[plots]]
name = "satisfaction"
x = "sinr_db"
y = "feasible"
"""


def test_series_plot_flag_ratios_and_solver_timings_are_recorded(tmp_path):
    spec = parse_spec(SERIES)
    run_sweep(spec, SERIES, tmp_path / "s.db")
    rows = _rows(tmp_path / "s.db")
    assert all(r["metrics"]["timings.solve_s"] > 0 for r in rows)  # from Result.timings, not the evaluator
    # a solver fact the solver does not have is NaN, not an error (zf never projects)
    assert all(math.isnan(r["metrics"]["info.projected"]) and r["status"] != "ERROR" for r in rows)
    curves = analysis.series_curves(rows, spec, spec.plots[0])
    xs, ys, n = curves["zf"]
    sel = [r for r in rows if r["params"] == {"sinr_db": 0}]
    assert n == 3 and len(xs) == 180 and xs[0] == -90.0
    assert ys == pytest.approx(np.mean([r["metrics"]["beampattern"] for r in sel], axis=0).tolist())
    # feasible is a flag: its mean is the satisfaction ratio (1 at 0 dB, 0 at an impossible 60 dB).
    cells = {c.x: c.mean for c in analysis.aggregate(rows, spec, spec.plots[1])}
    assert cells == {0: 1.0, 60: 0.0}
    text = analysis.report(rows, spec, {}, tmp_path / "r").read_text()
    assert "| -90 |" in text and (tmp_path / "r" / "pattern.png").exists()
    with pytest.raises(SpecError, match="plots\\[0\\].x"):
        parse_spec(SERIES.replace('x = "grid_deg"', 'x = "nope"'))
