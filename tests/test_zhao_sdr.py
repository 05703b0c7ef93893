"""SDR baseline ``sdr`` and the implicit projection module of 004 (zhao_sdr.py)."""

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from isac.metrics.comm import sinr
from isac.metrics.evaluate import evaluate
from isac.scenario.instances.beampattern_sinr import make_small, make_zhao
from isac.solvers import zhao_sdr
from isac.solvers.base import OptionError, Status
from isac.solvers.registry import get_solver, solvers_for
from isac.solvers.zhao_sdr import extract_beams, project_feasible, rebalance_for_sinr, solve_relaxation

PROBLEM = "beampattern-sinr"


# --- an independent formulation of the SDR optimum ---------------------------------------------


def _embed_vectors(U: np.ndarray) -> np.ndarray:
    """Rows [Re u, Im u] so that u^H X u = z^T [[Re X, -Im X], [Im X, Re X]] z for Hermitian X."""
    return np.concatenate([U.real, U.imag], axis=-1)


def independent_sdr_value(inst) -> float:
    """min MSE of the SDR with beta eliminated, over real PSD embeddings, solved by Clarabel.

    MSE = (1/N) ||(I - b b^T / b^T b) p||^2 with p_n = z_n^T R_r z_n; SINR rows with
    g = h sqrt(P0) / sigma (each divided by |g|^2) and R in units of P0. No code shared with zhao_sdr.
    """
    m, k = inst.num_antennas, inst.num_users
    b = inst.desired.numpy()
    n = b.size
    Pperp = np.eye(n) - (np.outer(b, b) / (b @ b) if b @ b > 0 else 0.0)
    Z = _embed_vectors(inst.steering.numpy())  # [N, 2M]
    W = _embed_vectors((inst.H.numpy() * math.sqrt(inst.power_w / inst.noise_w)).T)  # [L, 2M]

    def embedded():
        X = cp.Variable((2 * m, 2 * m), symmetric=True)
        return X, [X[:m, :m] == X[m:, m:], X[:m, m:] == -X[m:, :m]]

    R, cons = embedded()
    Cs = []
    for _ in range(k):
        Cl, c = embedded()
        Cs.append(Cl)
        cons += c + [Cl >> 0]
    cons += [R - sum(Cs) >> 0, cp.trace(R) == 2.0]
    g0 = inst.sinr_target
    for j in range(k):
        w = W[j] / np.linalg.norm(W[j])  # row divided by |g_j|^2 (conditioning)
        cons.append((1 + 1 / g0) * (w @ Cs[j] @ w) >= w @ R @ w + 1.0 / np.linalg.norm(W[j]) ** 2)
    p = cp.sum(cp.multiply(Z @ R, Z), axis=1)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(Pperp @ p) / n), cons)
    # Clarabel (interior point) first; it sometimes fails on this embedding, then SCS at tight eps.
    # "optimal_inaccurate" (Clarabel's reduced 5e-5 tolerances) is accepted: the test compares at 1e-3.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            prob.solve(solver="CLARABEL", equilibrate_enable=False)
        except cp.error.SolverError:
            prob.solve(solver="SCS", eps_abs=1e-9, eps_rel=1e-9, max_iters=200_000)
    assert prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), prob.status
    return float(prob.value) * inst.power_w**2


# --- helpers --------------------------------------------------------------------------------------


def _random_point(inst, seed: int, power_w: float | None = None):
    """Random C, S normalised to total power P0 (the GNN's normalisation, 004 eq. (23) with the square root)."""
    g = torch.Generator().manual_seed(seed)
    m, k = inst.num_antennas, inst.num_users
    C = torch.randn(m, k, dtype=torch.complex128, generator=g)
    S = torch.randn(m, m, dtype=torch.complex128, generator=g)
    f = math.sqrt((inst.power_w if power_w is None else power_w) / float((C.abs() ** 2).sum() + (S.abs() ** 2).sum()))
    return C * f, S * f


def _covariance(C, S):
    return C @ C.conj().T + S @ S.conj().T


def _random_lifted_point(inst, seed: int):
    """Hermitian PSD C_l (rank 3) and R = sum C_l + PSD, trace P0 (feasible for (29b)-(29d))."""
    rng = np.random.default_rng(seed)
    m, k = inst.num_antennas, inst.num_users

    def psd(rank):
        X = rng.standard_normal((m, rank)) + 1j * rng.standard_normal((m, rank))
        return X @ X.conj().T

    Cs = np.stack([psd(3) for _ in range(k)])
    R = Cs.sum(0) + psd(2)
    t = inst.power_w / np.trace(R).real
    return torch.as_tensor(R * t), torch.as_tensor(Cs * t)


# --- the solver -----------------------------------------------------------------------------------


def test_registered_with_timings():
    assert "sdr" in solvers_for(PROBLEM)
    res = get_solver(PROBLEM, "sdr").solve(make_small(0))
    assert res.status == Status.CONVERGED, res.message
    assert {"sdp_s", "extraction_s", "solve_s"} <= set(res.timings)
    assert res.timings["sdp_s"] <= res.timings["solve_s"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sdr_feasible_and_not_worse_than_zf(seed):
    inst = make_zhao(seed)
    res = get_solver(PROBLEM, "sdr").solve(inst)
    zf = get_solver(PROBLEM, "zf").solve(inst)
    assert res.status == Status.CONVERGED, res.message
    m = evaluate(inst, res.solution)  # independent check, not the Result's own metrics
    assert m["feasible"] and min(m["sinr_db"]) >= inst.sinr_db - 1e-5
    assert zf.feasible
    # ZF's point is feasible for the relaxation, so the SDR optimum cannot be above it.
    assert m["beampattern_mse"] <= zf.metrics["beampattern_mse"] * (1 + 1e-9)


@pytest.mark.parametrize("seed, grid_points", [(4, 60), (9, 30)])
def test_sdr_feasible_on_coarse_grids_where_the_users_take_all_power(seed, grid_points):
    """Regression: on Table II's coarse grids the SINRs bind and S gets ~0 power; with a 1e-6 margin
    these points came out ~3e-6 short of Gamma0 and the rebalancing LP could not help (no sensing power)."""
    inst = make_zhao(seed, target_angles_deg=(-40.0, 15.0, 30.0), grid_points=grid_points)
    res = get_solver(PROBLEM, "sdr").solve(inst)
    m = evaluate(inst, res.solution)
    assert res.status == Status.CONVERGED and m["feasible"], res.message
    assert min(m["sinr_db"]) < inst.sinr_db + 1e-3  # the SINR constraint does bind here


@pytest.mark.parametrize("inst", [make_zhao(0), make_zhao(3), make_small(0), make_small(1), make_zhao(5, sinr_db=16.0)],
                         ids=["zhao0", "zhao3", "small0", "small1", "zhao5-16dB"])
def test_sdr_optimum_matches_independent_formulation(inst):
    rel = solve_relaxation(inst, sinr_margin=0.0)
    assert rel.status == Status.CONVERGED, rel.message
    ref = independent_sdr_value(inst)
    assert rel.objective == pytest.approx(ref, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_relaxation_is_tight(seed):
    """Extraction keeps R_hat: the extracted beams' MSE is the SDP's optimal value."""
    inst = make_zhao(seed)
    rel = solve_relaxation(inst)
    C, S = extract_beams(inst, rel.R, rel.C)
    mse = evaluate(inst, {"C": C, "S": S})["beampattern_mse"]
    assert mse == pytest.approx(rel.objective, rel=1e-6)
    R_out = _covariance(C, S)
    assert float((R_out - rel.R).abs().max()) <= 1e-6 * inst.power_w


@pytest.mark.parametrize("backend", ["SCS", "CLARABEL"])
def test_infeasible_sinr_target(backend):
    inst = make_zhao(0, sinr_db=60.0)  # above every user's interference-free SNR (~27 dB)
    res = get_solver(PROBLEM, "sdr", {"backend": backend}).solve(inst)
    assert res.status == Status.INFEASIBLE
    assert "\n" not in res.message and "60" in res.message
    C, S = _random_point(inst, 0)
    _, _, status, msg = project_feasible(inst, C, S, backend=backend)
    assert status == Status.INFEASIBLE and "\n" not in msg


def test_infeasible_below_snr_bound_is_certified_by_the_solver():
    """Gamma0 below each user's SNR bound but jointly unreachable: the conic solver itself says so."""
    base = make_zhao(0)
    bound_db = min(10 * math.log10(float(base.power_w * (base.H[:, j].abs() ** 2).sum() / base.noise_w))
                   for j in range(base.num_users))
    inst = base.with_params(sinr_db=bound_db - 0.01)  # both users cannot each get (nearly) all the power
    assert zhao_sdr.snr_bound_violation(inst) is None
    rel = solve_relaxation(inst, backend="SCS")
    assert rel.status == Status.INFEASIBLE and rel.R is None and "\n" not in rel.message


def test_bad_options():
    with pytest.raises(OptionError, match="backend"):
        get_solver(PROBLEM, "sdr", {"backend": "MOSEK"})
    with pytest.raises(OptionError, match="eps"):
        get_solver(PROBLEM, "sdr", {"eps": "-1"})
    with pytest.raises(OptionError, match="sinr_margin"):
        get_solver(PROBLEM, "sdr", {"sinr_margin": 2.0})


# --- extraction (Prop. 1) -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extract_beams_keeps_sinr_and_covariance(seed):
    inst = make_zhao(seed)
    R_hat, C_hats = _random_lifted_point(inst, seed)
    C, S = extract_beams(inst, R_hat, C_hats)
    H = inst.H
    for j in range(inst.num_users):
        h = H[:, j]
        lifted_signal = (h.conj() @ C_hats[j] @ h).real
        assert float((h.conj() @ C[:, j]).abs() ** 2) == pytest.approx(float(lifted_signal), rel=1e-10)
        # eq. (32): C_hat_l - c_l c_l^H is PSD
        assert float(torch.linalg.eigvalsh(C_hats[j] - torch.outer(C[:, j], C[:, j].conj())).min()) >= -1e-12
        lifted_sinr = lifted_signal / ((h.conj() @ (R_hat - C_hats[j]) @ h).real + inst.noise_w)
        got = sinr(H, torch.cat([C, S], 1), inst.noise_w)[j]
        assert float(got) == pytest.approx(float(lifted_sinr), rel=1e-9)
    assert torch.allclose(_covariance(C, S), R_hat, rtol=0, atol=1e-12 * inst.power_w)
    assert float((C.abs() ** 2).sum() + (S.abs() ** 2).sum()) == pytest.approx(inst.power_w, rel=1e-14)


def test_extract_beams_rescales_to_exact_power():
    inst = make_small(0)
    R_hat, C_hats = _random_lifted_point(inst, 5)
    C, S = extract_beams(inst, R_hat * 1.01, C_hats * 1.01)
    assert float((C.abs() ** 2).sum() + (S.abs() ** 2).sum()) == pytest.approx(inst.power_w, rel=1e-14)
    assert torch.allclose(_covariance(C, S), R_hat, rtol=0, atol=1e-12)


# --- projection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,sinr_db,backend", [(0, 8.0, "CLARABEL"), (1, 8.0, "CLARABEL"), (2, 12.0, "CLARABEL"),
                                                  (3, 16.0, "CLARABEL"), (5, 8.0, "SCS"), (6, 12.0, "SCS")])
def test_projection_makes_random_points_feasible(seed, sinr_db, backend):
    inst = make_zhao(seed, sinr_db=sinr_db)
    C, S = _random_point(inst, seed)
    before = evaluate(inst, {"C": C, "S": S})
    assert not before["sinr_met"]  # the test needs an infeasible input
    Ct, St, status, msg = project_feasible(inst, C, S, backend=backend)
    assert status == Status.CONVERGED, msg
    assert evaluate(inst, {"C": Ct, "S": St})["feasible"]


@pytest.mark.parametrize("power_w", [0.0, 1e-12, 1e12])
def test_projection_extreme_power_inputs(power_w):
    inst = make_zhao(4, sinr_db=10.0)
    if power_w == 0.0:
        C, S = torch.zeros(10, 2, dtype=torch.complex128), torch.zeros(10, 10, dtype=torch.complex128)
    else:
        C, S = _random_point(inst, 4, power_w)
    Ct, St, status, msg = project_feasible(inst, C, S)
    assert status == Status.CONVERGED, msg
    assert evaluate(inst, {"C": Ct, "S": St})["feasible"]


def test_projection_of_feasible_point_barely_moves_it():
    inst = make_zhao(1)
    res = get_solver(PROBLEM, "sdr").solve(inst)
    C, S = res.solution["C"], res.solution["S"]
    Ct, St, status, msg = project_feasible(inst, C, S)
    assert status == Status.CONVERGED, msg
    R0, R1 = _covariance(C, S), _covariance(Ct, St)
    assert float(torch.linalg.matrix_norm(R1 - R0)) <= 1e-4 * float(torch.linalg.matrix_norm(R0))
    assert evaluate(inst, {"C": Ct, "S": St})["beampattern_mse"] == pytest.approx(res.metrics["beampattern_mse"], rel=1e-3)


def test_projection_is_history_independent():
    """Cached programs are reused without warm starts: the same input gives the same output."""
    inst = make_small(2)
    C, S = _random_point(inst, 2)
    first = project_feasible(inst, C, S)
    project_feasible(make_small(3), *_random_point(make_small(3), 3))
    again = project_feasible(inst, C, S)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_projection_rejects_nonfinite_and_bad_shape():
    inst = make_small(0)
    C, S = _random_point(inst, 0)
    C[0, 0] = float("nan")
    _, _, status, msg = project_feasible(inst, C, S)
    assert status == Status.NUMERICAL_ERROR and "NaN" in msg
    with pytest.raises(ValueError, match="C"):
        project_feasible(inst, torch.zeros(3, 2, dtype=torch.complex128), S)


# --- the accuracy safeguard -----------------------------------------------------------------------


def test_rebalance_restores_slightly_violated_sinr():
    base = make_zhao(2)
    zf = get_solver(PROBLEM, "zf").solve(base)  # meets Gamma0 exactly, spare power in S
    inst = base.with_params(sinr_db=base.sinr_db + 1e-3)  # now every SINR is short by ~2e-4 relative
    C, S = zf.solution["C"], zf.solution["S"]
    assert not evaluate(inst, {"C": C, "S": S})["sinr_met"]
    C2, S2, moved = rebalance_for_sinr(inst, C, S)
    m = evaluate(inst, {"C": C2, "S": S2})
    assert m["feasible"]
    assert 0 < moved < 1e-2 * inst.power_w
    # directions are kept
    cos = (C2.conj() * C).sum(0).abs() / (C2.norm(dim=0) * C.norm(dim=0))
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-12)
    # a feasible point is returned unchanged
    C3, S3, moved3 = rebalance_for_sinr(base, C, S)
    assert moved3 == 0.0 and C3 is C and S3 is S


def test_module_constants_sane():
    assert zhao_sdr.DEFAULT_SINR_MARGIN >= 0 and set(zhao_sdr.DEFAULT_EPS) == {"SCS", "CLARABEL"}


def test_bench_zhao_rows_and_ratios(tmp_path):
    """`isac bench zhao` machinery on one tiny size: every method on the same instances, ratios vs sdr."""
    from isac.experiments.bench import ZHAO_COLUMNS, bench_zhao, write_report

    rows = bench_zhao(grid_points=(30,), instances=2, batch=4, echo=lambda _m: None)
    methods = [r["method"] for r in rows]
    assert methods == ["sdr", "sdr clarabel", "zf", "gnn", "gnn batched x4", "gnn-fl", "gnn-fl batched x4",
                       "gnn-ip model=gnn (004)", "gnn-ip model=gnn, CVXPY projection", "gnn-ip", "gnn-ip batched x4"]
    by = {r["method"]: r for r in rows}
    sdr = rows[0]
    for r in rows:
        assert r["speedup_vs_sdr"] == pytest.approx(sdr["time_median_s"] / r["time_median_s"])
    assert all(r["feasible"] == 1.0 for r in rows if r["method"] in ("sdr", "sdr clarabel", "zf")
               or r["method"].startswith("gnn-ip"))
    for r in rows:
        if r["method"].startswith("gnn-ip"):
            assert r["model_feasible"] + r["projected"] == pytest.approx(1.0)
            assert r["model"] == ("gnn" if "model=gnn" in r["method"] else "gnn-fl")
    # the two projection solvers make the same decisions and reach the same points
    ours, cvx = by["gnn-ip model=gnn (004)"], by["gnn-ip model=gnn, CVXPY projection"]
    assert ours["projected"] == cvx["projected"]
    assert ours["mse_fine_mean"] == pytest.approx(cvx["mse_fine_mean"], rel=1e-4)
    assert rows[0]["mse_fine_mean"] == pytest.approx(rows[1]["mse_fine_mean"], rel=1e-3)  # two backends, one optimum
    text = write_report(rows, tmp_path, "t", ZHAO_COLUMNS).read_text()
    assert "| 30 | gnn batched x4 | 4 |" in text and "median speed-up vs sdr" in text
