"""001 (Xu et al.) reproduction: the bundled `xu` specs validate and name real solvers and preset
parameters, and a shrunk quick run writes results, plots and a report whose rows an independent
recomputation of power and SINR confirms."""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from isac.experiments import reproduce
from isac.scenario.problems import make_preset, preset_parameters
from isac.solvers.registry import get_solver


def _spec_dir() -> Path:
    return Path(str(resources.files("isac.experiments").joinpath("specs", "xu")))


def test_every_xu_spec_is_registered_validates_and_names_real_solvers_and_parameters():
    paper = reproduce.papers()["xu"]
    assert sorted(paper.specs) == sorted(p.name for p in _spec_dir().glob("*.toml"))
    for mode in ("quick", "full"):
        specs = [s for s, _ in reproduce.paper_specs("xu", mode)]
        for spec in specs:
            assert spec.problem == "bs-selection" and spec.description.startswith("001 ")
            assert "exhaustive" in {s.name for s in spec.solvers}  # the optimum beside every method
            for entry in spec.solvers:
                get_solver(spec.problem, entry.name, entry.options)
            params = preset_parameters(spec.problem, spec.preset)
            for axis in spec.axes:
                assert axis.name in params
    quick = {s.name: s for s, _ in reproduce.paper_specs("xu", "quick")}
    assert sum(s.total_rows() for s in quick.values()) <= 60
    assert "Scheme 1" in quick["xu_table2_fig2"].notes and "not in our copy" in quick["xu_table2_fig2"].notes
    fig = quick["xu_fig3_4_sinr"]
    assert {p.name: p.include for p in fig.plots}["power"] == "feasible"  # the paper averages feasible solutions


def test_preset_parameters_reach_the_instance():
    inst = make_preset("bs-selection", "xu-fig2", 0, sinr_min_db=12.0, rcs_m2=10.0)
    ref = make_preset("bs-selection", "xu-fig2", 0)
    assert inst.sinr_min_db.tolist() == [12.0] * 5
    ratio = (inst.alpha.abs() ** 2 / ref.alpha.abs().clamp_min(1e-300) ** 2)[~np.eye(4, dtype=bool)]
    assert ratio.numpy() == pytest.approx(0.1, rel=1e-12)  # |alpha|^2 is linear in the RCS


def test_tiny_quick_reproduction_writes_results_plots_and_report(tmp_path):
    text = (_spec_dir() / "table2_fig2.toml").read_text().replace('preset = "xu-fig2"', 'preset = "small"')
    text = text.split("[quick]")[0] + "[quick]\ntrials = 1\n"
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "t2.toml").write_text(text)
    reproduce.register_paper(reproduce.Paper("test-xu", "xu, shrunk", ("t2.toml",), spec_dir=specs))
    try:
        summaries = reproduce.reproduce("test-xu", "quick", tmp_path / "out", echo=lambda s: None)
    finally:
        reproduce._PAPERS.pop("test-xu")
    assert [s.computed for s in summaries] == [3]
    folder = tmp_path / "out" / "xu_table2_fig2-quick"
    for p in ("power", "receiver", "gap"):
        assert (folder / f"{p}.png").stat().st_size > 0
    text = (folder / "report.md").read_text()
    assert "## Manifest" in text and "of exhaustive (global optimum) - 1 (same instance)" in text
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    powers = {r["solver"]: float(r["total_power_w"]) for r in rows}
    assert all(r["status"] == "CONVERGED" and r["feasible"] == "True" for r in rows)
    for method in ("scheme1 (nearest BS receives)", "penalty-sdr (proposed, Algorithm 1)"):
        assert powers[method] >= powers["exhaustive (global optimum)"] * (1 - 1e-4)
    # Redraw the row's instance and re-solve: the stored number is reproduced.
    seed = int(rows[0]["seed"])
    inst = make_preset("bs-selection", "small", seed, sinr_min_db=8.0)
    again = get_solver("bs-selection", "exhaustive").solve(inst).metrics["total_power_w"]
    assert math.isclose(again, powers["exhaustive (global optimum)"], rel_tol=1e-9)


def test_bench_xu_reports_every_method_against_the_optimum(tmp_path):
    from isac.experiments.bench import write_report
    from isac.experiments.bench_xu import XU_COLUMNS, bench_xu

    rows = bench_xu(num_users=(2,), instances=1, methods=("exhaustive", "scheme1", "scheme2"), echo=lambda s: None)
    by = {r["method"]: r for r in rows if r["status"] != "summary"}
    assert by["exhaustive"]["gap_to_optimum"] == 0.0 and by["exhaustive"]["sdps"] >= 4
    for m in ("scheme1", "scheme2"):
        if by[m]["power_w"] is not None:
            assert by[m]["gap_to_optimum"] >= -1e-4
    summary = [r for r in rows if r["status"] == "summary"]
    assert len(summary) == 1 and summary[0]["time_s"] == by["exhaustive"]["time_s"]
    assert summary[0]["under_a_minute"] == (by["exhaustive"]["time_s"] < 60)
    text = write_report(rows, tmp_path, "t", XU_COLUMNS).read_text()
    assert "power / optimum - 1" in text


def test_relative_to_plots_the_gap_to_a_reference_solver_on_the_same_instance():
    from isac.experiments.analysis import aggregate
    from isac.experiments.spec import parse_spec

    text = (_spec_dir() / "table2_fig2.toml").read_text()
    spec = parse_spec(text)
    plot = next(p for p in spec.plots if p.name == "gap")
    opt, s1 = "exhaustive (global optimum)", "scheme1 (nearest BS receives)"

    def row(solver, trial, power, feasible=True):
        return {"solver": solver, "point": 0, "trial": trial, "params": {"sinr_min_db": 8.0},
                "time_s": 0.0, "iterations": 0, "metrics": {"total_power_w": power, "feasible": feasible}}

    rows = [row(opt, 0, 2.0), row(s1, 0, 3.0), row(opt, 1, 4.0), row(s1, 1, 5.0),
            row(opt, 2, 1.0, feasible=False), row(s1, 2, 9.0)]
    cells = {c.series: c for c in aggregate(rows, spec, plot)}
    assert cells[opt].mean == 0.0 and cells[opt].n == 2 and cells[opt].dropped == 1
    assert cells[s1].mean == pytest.approx((0.5 + 0.25) / 2) and cells[s1].dropped == 1  # no optimum on trial 2
    from isac.experiments.spec import SpecError

    with pytest.raises(SpecError, match="relative_to"):
        parse_spec(text.replace('relative_to = "exhaustive (global optimum)"', 'relative_to = "nope"'))
