"""WMMSE-SDR baseline for ``crlb-sumrate`` (003): SDP building blocks against the engine, bounds, solver."""

import json
import math

import cvxpy as cp
import numpy as np
import pytest
import torch

from isac.metrics.bounds.fang import fang_derivatives, fang_fim
from isac.metrics.evaluate import evaluate
from isac.metrics.fim import crb_trace, fisher_information
from isac.metrics.problems.crlb_sumrate import objective_terms
from isac.scenario.instances.crlb_sumrate import small_preset
from isac.solvers import fang_sdr
from isac.solvers.base import OptionError, Status
from isac.solvers.baselines import MRT, ZF
from isac.solvers.fang_sdr import (
    WmmseSdr,
    crlb_lmi,
    extract_beams,
    fim_expression,
    min_crlb_sdp,
    relaxed_objective,
)
from isac.solvers.registry import get_solver


def _dense(inst):
    return fang_derivatives(inst.tx_array, inst.rx_array, inst.theta_rad, inst.phi_rad, inst.alpha).dense().numpy()


def _random_psd(rng, n, rank, power):
    X = rng.standard_normal((n, rank)) + 1j * rng.standard_normal((n, rank))
    R = X @ X.conj().T
    return R * (power / np.trace(R).real)


def _random_full_power_W(rng, inst):
    W = rng.standard_normal((inst.num_tx, inst.num_streams)) + 1j * rng.standard_normal((inst.num_tx, inst.num_streams))
    W *= math.sqrt(inst.p_max_w) / np.linalg.norm(W)
    return torch.as_tensor(W)


VARIANTS = [
    small_preset(0),
    small_preset(2, num_targets=2, tx_shape=(2, 3), rx_shape=(3, 2)),  # P = 8, non-square arrays
]


# --- the affine FIM and the LMI ------------------------------------------------------------------


@pytest.mark.parametrize("inst", VARIANTS)
def test_fim_expression_matches_engine(inst):
    """CVXPY's affine F(R) equals the engine's FIM (both derivative forms) at random PSD R."""
    rng = np.random.default_rng(7)
    dG = _dense(inst)
    scale = 2.0 * inst.snapshots / inst.noise_sense_w
    factored = fang_derivatives(inst.tx_array, inst.rx_array, inst.theta_rad, inst.phi_rad, inst.alpha)
    for rank in (1, inst.num_tx):
        R = _random_psd(rng, inst.num_tx, rank, inst.p_max_w)
        var = cp.Variable((inst.num_tx, inst.num_tx), hermitian=True)
        var.value = R
        F_cvx = fim_expression(dG, var, scale).value
        Rt = torch.as_tensor(R)
        for deriv in (torch.as_tensor(dG), factored):
            F_eng = fisher_information(deriv, covariance=Rt, snapshots=inst.snapshots,
                                       noise_power_w=inst.noise_sense_w).numpy()
            assert np.abs(F_cvx - F_eng).max() <= 1e-9 * np.abs(F_eng).max()
        assert np.array_equal(F_cvx, F_cvx.T)
        assert np.linalg.eigvalsh(F_cvx).min() >= -1e-12 * np.abs(F_cvx).max()


@pytest.mark.parametrize("scaled", [False, True])
def test_lmi_gives_trace_of_inverse(scaled):
    """min tr(T) s.t. [[F, I], [I, T]] >= 0 for fixed R equals tr(F^-1) (with and without the D scaling)."""
    inst = VARIANTS[1]
    rng = np.random.default_rng(11)
    R = _random_psd(rng, inst.num_tx, inst.num_tx, inst.p_max_w)
    F_np = fisher_information(torch.as_tensor(_dense(inst)), covariance=torch.as_tensor(R),
                              snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w).numpy()
    d = 1.0 / np.sqrt(np.diag(F_np)) if scaled else None
    if not scaled:  # unscaled, keep the problem well conditioned by working in units of F's diagonal mean
        F_np = F_np / np.mean(np.diag(F_np))
    T, cons, value = crlb_lmi(cp.Constant(F_np), d)
    prob = cp.Problem(cp.Minimize(value), cons)
    prob.solve(solver="CLARABEL")
    assert prob.status == cp.OPTIMAL
    exact = np.trace(np.linalg.inv(F_np))
    assert prob.value == pytest.approx(exact, rel=1e-6)
    D = np.diag(d if d is not None else np.ones(F_np.shape[0]))
    assert np.allclose(D @ T.value @ D, np.linalg.inv(F_np), rtol=1e-4, atol=1e-6 * exact)


@pytest.mark.parametrize("inst", VARIANTS)
def test_pure_crlb_sdp_is_a_lower_bound(inst):
    """delta_c = 0: the SDP optimum lower-bounds tr(F^-1) of MRT, ZF and random full-power points."""
    value, R = min_crlb_sdp(inst)
    assert np.trace(R).real <= inst.p_max_w * (1 + 1e-6)
    # the returned covariance attains the value (engine check of the optimiser's point)
    F = fisher_information(torch.as_tensor(_dense(inst)), covariance=torch.as_tensor(R),
                           snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w)
    assert float(crb_trace(F)) == pytest.approx(value, rel=1e-4)
    rng = np.random.default_rng(5)
    points = [MRT().solve(inst).solution["W"], ZF().solve(inst).solution["W"]]
    points += [_random_full_power_W(rng, inst) for _ in range(20)]
    for W in points:
        crlb = float(crb_trace(fang_fim(inst.tx_array, inst.rx_array, inst.theta_rad, inst.phi_rad, inst.alpha, W,
                                        inst.snapshots, inst.noise_sense_w)))
        assert value <= crlb * (1 + 1e-5)


def test_sdp_objective_is_a_tight_minorizer():
    """The compiled SDP objective equals 003's objective at the weights' own point and lower-bounds it elsewhere."""
    inst = VARIANTS[1]
    dG = _dense(inst)
    step = fang_sdr._SdrStep(inst, dG, include_rates=True, include_crlb=True)
    rng = np.random.default_rng(3)
    k, nt = inst.num_users, inst.num_tx

    def random_point():
        Wk = np.stack([_random_psd(rng, nt, 1 + j, inst.p_max_w / (k + 1)) for j in range(k)])
        return fang_sdr._Point(Wk, _random_psd(rng, nt, nt, inst.p_max_w / (k + 1)))

    def sdp_objective_at(point):
        for var, val in zip(step.Wk, point.Wk):
            var.value = val / inst.p_max_w
        step.Rs.value = point.Rs / inst.p_max_w
        F = fisher_information(torch.as_tensor(dG), covariance=torch.as_tensor(point.Rx),
                               snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w).numpy()
        d = fang_sdr._diag_scaling(fang_sdr.fim_coefficients(dG, step.scale * step.p_w)[0], F.shape[0], nt)
        Dinv = np.diag(1.0 / d)
        step.T.value = Dinv @ np.linalg.inv(F) @ Dinv
        return step.problem.objective.value

    anchor = random_point()
    step.set_weights(anchor)
    assert sdp_objective_at(anchor) == pytest.approx(relaxed_objective(inst, dG, anchor), rel=1e-9)
    for _ in range(10):
        other = random_point()
        assert sdp_objective_at(other) <= relaxed_objective(inst, dG, other) + 1e-12


def test_extract_beams_recovers_rank_one_points():
    """Rank-one W_k and rank <= Ns R_s at full power: candidate 0 reproduces each W_k and R_x; every candidate has power P_t."""
    inst = VARIANTS[0]
    rng = np.random.default_rng(2)
    W = _random_full_power_W(rng, inst).numpy()
    k = inst.num_users
    point = fang_sdr._Point(np.einsum("ik,jk->kij", W[:, :k], W[:, :k].conj()), W[:, k:] @ W[:, k:].conj().T)
    cands = extract_beams(point, inst.num_sensing_streams, inst.p_max_w, np.random.default_rng(0), 5)
    assert cands.shape == (2 + 5, inst.num_tx, inst.num_streams)
    np.testing.assert_allclose(np.sum(np.abs(cands) ** 2, axis=(1, 2)), inst.p_max_w, rtol=1e-12)
    c = cands[0]
    for j in range(k):
        np.testing.assert_allclose(np.outer(c[:, j], c[:, j].conj()), point.Wk[j], atol=1e-12 * inst.p_max_w)
    np.testing.assert_allclose(c @ c.conj().T, point.Rx, atol=1e-12 * inst.p_max_w)
    # more sensing streams than antennas: zero-padded columns
    wide = extract_beams(point, inst.num_tx + 2, inst.p_max_w)
    assert np.all(wide[:, :, k + inst.num_tx:] == 0)


# --- the solver ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solver_feasible_and_beats_zf(seed):
    inst = small_preset(seed)
    res = WmmseSdr().solve(inst)
    assert res.status in (Status.CONVERGED, Status.MAX_ITERATIONS), res.message
    assert res.feasible
    assert res.metrics["power_w"] == pytest.approx(inst.p_max_w, rel=1e-9)  # 003 Prop. 1: full power
    zf = ZF(comm_power_fraction=0.5).solve(inst)
    assert res.metrics["objective"] >= zf.metrics["objective"]
    # trace: the returned point is the best extracted one, scored by the metrics package
    assert res.metrics["objective"] == pytest.approx(max(t["objective"] for t in res.trace), rel=1e-12)
    obj = objective_terms(inst, res.solution["W"])["objective"]
    assert float(obj) == pytest.approx(evaluate(inst, res.solution)["objective"], rel=1e-12)
    # AO monotonicity (relaxed domain): SDP value >= previous relaxed objective, and <= its own relaxed objective
    slack = 1e-4 * max(abs(t["relaxed_objective"]) for t in res.trace)
    for prev, cur in zip(res.trace, res.trace[1:]):
        assert cur["sdp_value"] >= prev["relaxed_objective"] - slack
    for t in res.trace:
        assert t["sdp_value"] <= t["relaxed_objective"] + slack
    json.dumps(res.to_dict())


def test_solver_is_deterministic_and_invariant_to_user_phase():
    inst = small_preset(4)
    a = WmmseSdr(seed=3).solve(inst)
    b = WmmseSdr(seed=3).solve(inst)
    assert torch.equal(a.solution["W"], b.solution["W"])
    # rotating a user's channel phase leaves the problem unchanged (rates depend on |h^H w|)
    H = inst.H * torch.exp(1j * torch.tensor([0.7, -2.1], dtype=torch.float64))
    c = WmmseSdr(seed=3).solve(inst.with_params(H=H))
    assert c.metrics["objective"] == pytest.approx(a.metrics["objective"], rel=1e-4)


def test_no_sensing_streams_and_pure_sensing():
    inst = small_preset(1, num_sensing_streams=0)
    res = WmmseSdr(max_iterations=5, randomizations=0).solve(inst)
    assert res.feasible and res.status is not Status.NUMERICAL_ERROR
    assert res.solution["W"].shape == (inst.num_tx, inst.num_users)
    # delta_c = 0: the solver's CRLB cannot beat the SDP bound and should come close to it
    sens = small_preset(1).with_params(delta_c=0.0)
    bound, _ = min_crlb_sdp(sens)
    r = WmmseSdr(max_iterations=3).solve(sens)
    assert bound * (1 - 1e-5) <= r.metrics["crlb_trace"] <= bound * 1.01


def test_conic_failure_is_numerical_error(monkeypatch):
    def fail(self, *args, **kwargs):
        raise cp.error.SolverError("simulated failure")

    monkeypatch.setattr(cp.Problem, "solve", fail)
    res = WmmseSdr().solve(small_preset(0))
    assert res.status is Status.NUMERICAL_ERROR
    assert "simulated failure" in res.message or "solver error" in res.message
    assert not res.feasible


def test_options_and_registry():
    s = get_solver("crlb-sumrate", "wmmse-sdr", {"max_iterations": "3", "solver": "CLARABEL", "randomizations": "0"})
    assert isinstance(s, WmmseSdr) and s.max_iterations == 3
    with pytest.raises(OptionError, match="solver"):
        get_solver("crlb-sumrate", "wmmse-sdr", {"solver": "MOSEK"})
    with pytest.raises(OptionError, match="max_iterations"):
        get_solver("crlb-sumrate", "wmmse-sdr", {"max_iterations": "0"})
    res = s.solve(small_preset(2))
    assert res.feasible and res.status is not Status.NUMERICAL_ERROR
