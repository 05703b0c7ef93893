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
import torch

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


def _independent_metrics(inst, W: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Sum rate (bit/s/Hz), SPEB (m^2) and per-BS power of beams W [N, L, S], written out with NumPy:
    rates from the stacked channels, SPEB from a numerical Jacobian of the echo model."""
    n, length, s = W.shape
    H = inst.H.numpy().reshape(n * length, -1)
    Ws = W.reshape(n * length, s)
    g = np.abs(H.conj().T @ Ws) ** 2
    k = H.shape[1]
    sig = np.diag(g[:, :k])
    rate = float(np.sum(np.log2(1 + sig / (g.sum(1) - sig + inst.noise_comm_w))))
    power = (np.abs(W) ** 2).sum(axis=(1, 2))
    # FIM of eta = [t (3), Re alpha (N^2), Im alpha (N^2)] by central differences of the mean echo G(eta) W
    from isac.metrics.bounds.lian import target_angles

    bs = inst.bs_positions_m

    def mean_echo(t, alpha):
        th, be = target_angles(bs, torch.as_tensor(t))
        a = inst.array.steering(th, be).numpy()  # [N, L]
        G = np.zeros((n * length, n * length), dtype=complex)
        for m in range(n):
            for r in range(n):
                G[r * length:(r + 1) * length, m * length:(m + 1) * length] = alpha[m, r] * np.outer(a[r], a[m].conj())
        return (G @ Ws).ravel()

    t0, a0 = inst.target_position_m.numpy(), inst.alpha.numpy()
    eta0 = np.concatenate([t0, a0.real.ravel(), a0.imag.ravel()])

    def echo(eta):
        return mean_echo(eta[:3], (eta[3:3 + n * n] + 1j * eta[3 + n * n:]).reshape(n, n))

    cols = []
    for i in range(eta0.size):
        h = 1e-4 if i < 3 else 1e-6 * np.abs(a0).max()
        e = np.zeros_like(eta0)
        e[i] = h
        cols.append((echo(eta0 + e) - echo(eta0 - e)) / (2 * h))
    D = np.stack(cols, axis=1)
    F = 2 * inst.snapshots / inst.noise_sense_w * np.real(D.conj().T @ D)
    J = F[:3, :3] - F[:3, 3:] @ np.linalg.solve(F[3:, 3:], F[3:, :3])
    return rate, float(np.trace(np.linalg.inv(J))), power


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
    rate, speb, power = _independent_metrics(inst, res.solution["W"].numpy())
    assert math.isclose(rate, float(at2["pdpg"]["sum_rate_bps_hz"]), rel_tol=1e-9)
    assert speb == pytest.approx(float(at2["pdpg"]["speb_m2"]), rel=1e-4)
    assert speb <= inst.speb_max_m2 * (1 + 1e-4) and bool((power <= inst.p_max_w.numpy() * (1 + 1e-9)).all())
