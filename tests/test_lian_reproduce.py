"""002 (Lian et al.) reproduction: the bundled `lian` specs validate and name real solvers and preset
parameters, and a shrunk quick run writes results, plots and a report whose rows an independent
recomputation of rates, SPEB and power confirms."""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from isac.experiments import reproduce
from isac.metrics.bounds.lian_floor import speb_floor_m2
from isac.scenario.problems import make_preset, preset_parameters


def _spec_dir() -> Path:
    return Path(str(resources.files("isac.experiments").joinpath("specs", "lian")))


def test_every_lian_spec_is_registered_validates_and_names_real_solvers_and_parameters():
    from isac.solvers.registry import get_solver

    paper = reproduce.papers()["lian"]
    assert sorted(paper.specs) == sorted(p.name for p in _spec_dir().glob("*.toml"))
    for mode in ("quick", "full"):
        for spec, _ in reproduce.paper_specs("lian", mode):
            assert spec.problem == "coop-localization" and spec.description.startswith("002 ")
            assert "pdpg" in {s.name for s in spec.solvers}
            for entry in spec.solvers:
                get_solver(spec.problem, entry.name, entry.options)
            params = preset_parameters(spec.problem, spec.preset)
            for axis in spec.axes:
                assert axis.name in params
    quick = {s.name: s for s, _ in reproduce.paper_specs("lian", "quick")}
    assert "HomoGNN > CNN" in quick["lian_fig7_8_power"].notes and "claims" in quick["lian_fig7_8_power"].notes
    # the trade-off sweep starts below the floor, where every method must say INFEASIBLE
    assert min(quick["lian_tradeoff"].axes[0].values) < 1.0


def test_robust_preset_parameters_reach_the_instance():
    inst = make_preset("coop-localization", "lian-robust", 3, position_error_m=4.0, csi_snr_db=10.0)
    err = (inst.target_position_estimate_m - inst.target_position_m).abs()
    assert bool(((err >= 4.0) & (err < 5.0)).all())
    nmse = ((inst.H_estimate - inst.H).abs() ** 2).sum() / (inst.H.abs() ** 2).sum()
    assert 0.03 < float(nmse) < 0.3  # 1/SNR = 0.1 on average over the 15 links


def _independent_metrics(inst, W: np.ndarray) -> tuple[float, float, bool]:
    """The NumPy re-check of benchmarks/lian_heldout.py (rates, a central-difference SPEB in the
    position and gains, budgets), loaded by its path relative to this file."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lian_heldout.py"
    spec = importlib.util.spec_from_file_location("lian_heldout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.independent(inst, W)


def test_tiny_quick_reproduction_writes_results_plots_and_report(tmp_path):
    text = (_spec_dir() / "tradeoff.toml").read_text().replace('preset = "lian"', 'preset = "small"')
    text = text.split("[quick]")[0] + "[quick]\ntrials = 1\naxes = { gamma_over_floor = [0.9, 2.0] }\n"
    text = text.replace("where = { gamma_over_floor = [1.05, 2.0, 5.0, 100.0] }", "where = { gamma_over_floor = [2.0] }")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tradeoff.toml").write_text(text)
    reproduce.register_paper(reproduce.Paper("test-lian", "lian, shrunk", ("tradeoff.toml",), spec_dir=specs))
    try:
        summaries = reproduce.reproduce("test-lian", "quick", tmp_path / "out", echo=lambda s: None)
    finally:
        reproduce._PAPERS.pop("test-lian")
    assert [s.computed for s in summaries] == [3]
    folder = tmp_path / "out" / "lian_tradeoff-quick"
    for p in ("rate", "feasible", "speb_over_gamma"):
        assert (folder / f"{p}.png").stat().st_size > 0
    assert "## Manifest" in (folder / "report.md").read_text()
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    below = [r for r in rows if float(r["gamma_over_floor"]) < 1]
    assert below and all(r["status"] == "INFEASIBLE" for r in below)
    at2 = {r["solver"]: r for r in rows if float(r["gamma_over_floor"]) == 2.0}
    assert set(at2) == {"pdpg", "sca-sdr"} and all(r["feasible"] == "True" for r in at2.values())
    # pdpg reaches the reference's sum rate (within its stopping accuracy) on the same instance
    assert float(at2["pdpg"]["sum_rate_bps_hz"]) >= float(at2["sca-sdr"]["sum_rate_bps_hz"]) * (1 - 2e-3)
    # redraw the instance, re-solve, and check the stored numbers with an independent implementation
    from isac.solvers.registry import get_solver

    seed = int(at2["pdpg"]["seed"])
    inst = make_preset("coop-localization", "small", seed, gamma_over_floor=2.0, p_max_dbm=20.0)
    assert inst.speb_max_m2 == pytest.approx(2 * speb_floor_m2(inst), rel=1e-12)
    res = get_solver("coop-localization", "pdpg").solve(inst)
    rate, speb, power_ok = _independent_metrics(inst, res.solution["W"].numpy())
    assert math.isclose(rate, float(at2["pdpg"]["sum_rate_bps_hz"]), rel_tol=1e-9)
    assert speb == pytest.approx(float(at2["pdpg"]["speb_m2"]), rel=1e-4)
    assert speb <= inst.speb_max_m2 * (1 + 1e-4) and power_ok
