"""000's ADMM beamformer (Algorithm 2) for one BS: the MM surrogate against the paper's Kronecker forms,
the closed-form (C, q) step against the SDP (49), the FP identities, and solves on small instances."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
import torch

from isac.scenario.problems import make_preset
from isac.solvers.base import OptionError, Status
from isac.solvers.li_admm import (
    AdmmBeamformer,
    WStep,
    comm_part,
    crb_from_fim,
    fim_values,
    fp_auxiliaries,
    fp_value,
    kron_hermitian_max_eig,
    penalty_surrogate,
    project_crb_set,
    scale_problem,
    wstep_data,
)
from isac.solvers.li_beamforming import BsProblem, beamformers, feasible_start, get_beamformer, initial_beams


def _vec(X: np.ndarray) -> np.ndarray:
    return X.reshape(-1, order="F")


def _rand(rng, *shape) -> np.ndarray:
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def _unit_ball(rng, m, s, radius=None) -> np.ndarray:
    X = _rand(rng, m, s)
    r = rng.uniform(0.2, 1.0) if radius is None else radius
    return X * (r / np.linalg.norm(X))


@pytest.fixture(scope="module")
def tiny():
    """M = 3, N = 2, Ns = 1: S = 2 or 3 variable columns, so the paper's Theta-hat is at most 81 x 81."""
    inst = make_preset("multibs-association", "li", 3, num_antennas=3, num_users=2, num_sensing_streams=1)
    bp = BsProblem.from_instance(inst, 0, np.array([0, 0]))
    return bp, scale_problem(bp)


@pytest.fixture(scope="module")
def small_li():
    return make_preset("multibs-association", "li", 0, num_antennas=6, num_users=4)


# --- lambda-hat ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 5])
def test_kron_hermitian_max_eig_equals_explicit_eigenvalue(m):
    rng = np.random.default_rng(m)
    for r in (1, 2, m):
        T = _rand(rng, m, r) @ _rand(rng, r, m)
        K = np.kron(T.conj(), T)
        want = np.linalg.eigvalsh(0.5 * (K + K.conj().T))[-1]
        assert kron_hermitian_max_eig(T) == pytest.approx(want, rel=1e-9)
    A = _rand(rng, m, 2)
    H = A @ A.conj().T  # Hermitian PSD: lambda_max(Theta)^2
    assert kron_hermitian_max_eig(H) == pytest.approx(np.linalg.eigvalsh(H)[-1] ** 2, rel=1e-9)
    x, y = _rand(rng, m), _rand(rng, m)  # rank one: (|y^H x|^2 + |x|^2 |y|^2) / 2
    want = 0.5 * (abs(np.vdot(y, x)) ** 2 + np.vdot(x, x).real * np.vdot(y, y).real)
    assert kron_hermitian_max_eig(np.outer(x, y.conj())) == pytest.approx(want, rel=1e-9)


# --- the MM surrogate (51)-(58) against the paper's Kronecker matrices ----------------------------------------


def _paper_surrogate(theta, c, X, Xj, power, tight):
    """(51)-(58) with I (x) Theta, Theta-tilde, Theta-hat = conj(K) (x) K formed explicitly."""
    s = X.shape[1]
    w, wj = _vec(X), _vec(Xj)
    K = np.kron(np.eye(s), theta)
    Tt = np.conj(c) * K + c * K.conj().T  # (52)
    lam = max(np.linalg.eigvalsh(0.5 * (Tt + Tt.conj().T))[-1], 0.0)
    V = lam * np.eye(K.shape[0])
    That = np.kron(K.conj(), K)  # (55)
    lam_hat = np.linalg.eigvalsh(0.5 * (That + That.conj().T))[-1]
    wh, whj = _vec(np.outer(w, w.conj())), _vec(np.outer(wj, wj.conj()))
    iso = np.vdot(w, V @ w).real if tight else lam * power  # (53) vs (54)
    term_a = 2 * np.real(np.vdot(w, (Tt - V) @ wj)) + iso + np.real(np.vdot(wj, (V - Tt) @ wj))
    quart = lam_hat * np.vdot(wh, wh).real if tight else lam_hat * power**2  # (56), first vs second line
    lin = np.real(np.vdot(whj, (That + That.conj().T) @ wh))
    concave = -2 * lam_hat * (2 * np.vdot(wj, wj).real * np.real(np.vdot(wj, w)) - np.vdot(wj, wj).real ** 2)  # (58)
    term_b = quart + lin + concave + lam_hat * np.vdot(whj, whj).real - np.real(np.vdot(whj, That @ whj))
    return term_a + term_b + abs(c) ** 2, lam, lam_hat, That, wh, K, w


@pytest.mark.parametrize("s", [2, 3])
def test_mm_surrogate_equals_kronecker_form(tiny, s):
    _, sc = tiny
    rng = np.random.default_rng(10 + s)
    for j in range(3):
        theta = sc.theta[j]
        c = complex(rng.normal(), rng.normal() if j == 1 else 0.0)
        X, Xj = _unit_ball(rng, 3, s), _unit_ball(rng, 3, s)
        for tight in (False, True):
            want, lam, lam_hat, That, wh, K, w = _paper_surrogate(theta, c, X, Xj, 1.0, tight)
            sur = penalty_surrogate(theta, c, Xj, kron_hermitian_max_eig(theta))
            assert sur.lam == pytest.approx(lam, rel=1e-10, abs=1e-14)
            assert sur.lam_hat == pytest.approx(lam_hat, rel=1e-8)
            assert sur.value(X, tight=tight) == pytest.approx(want, rel=1e-8, abs=1e-12)
        # (55): the quartic term is a quadratic form of vec(w w^H)
        assert np.vdot(wh, That @ wh).real == pytest.approx(abs(np.vdot(w, K @ w)) ** 2, rel=1e-10)
        assert abs(fim_values(sc.theta, X)[j] - np.vdot(w, K @ w)) < 1e-12 * max(1.0, abs(np.vdot(w, K @ w)))


def test_mm_surrogate_majorises_and_touches(tiny):
    _, sc = tiny
    rng = np.random.default_rng(7)
    s = sc.cols.size
    for j in range(3):
        theta, lam_hat = sc.theta[j], sc.lam_hat[j]
        for _ in range(5):
            c = complex(rng.normal(scale=2.0), rng.normal() if j == 1 else 0.0)
            Xj = _unit_ball(rng, 3, s, radius=1.0)  # full power: both variants touch
            Xi = _unit_ball(rng, 3, s, radius=0.6)  # inside: only the tight variant touches
            sur, sur_in = penalty_surrogate(theta, c, Xj, lam_hat), penalty_surrogate(theta, c, Xi, lam_hat)

            def true(X):
                return abs(fim_values(sc.theta, X)[j] + c) ** 2

            for tight in (False, True):
                assert sur.value(Xj, tight) == pytest.approx(true(Xj), rel=1e-9, abs=1e-12)
                for _ in range(20):
                    X = _unit_ball(rng, 3, s)
                    assert sur.value(X, tight) >= true(X) - 1e-10
                    assert sur_in.value(X, tight) >= true(X) - 1e-10
            assert sur_in.value(Xi, True) == pytest.approx(true(Xi), rel=1e-9, abs=1e-12)
            gap = sur_in.lam * (1 - 0.36) + sur_in.lam_hat * (1 - 0.36**2)  # (54)/(56) at |X_j|^2 = 0.36
            assert sur_in.value(Xi, False) - true(Xi) == pytest.approx(gap, rel=1e-7, abs=1e-12)


def test_wstep_objective_is_comm_part_plus_surrogates_and_cvxpy_agrees(tiny):
    bp, sc = tiny
    rng = np.random.default_rng(3)
    s = sc.cols.size
    Xj = sc.from_full(feasible_start(bp))
    v, b = fp_auxiliaries(sc.h, sc.omega, Xj)
    q = project_crb_set(fim_values(sc.theta, Xj) + 0.1, sc.c_min)
    ups, rho = np.array([0.3, 0.2 - 0.1j, -0.4]), 0.7
    data = wstep_data(sc, Xj, v, b, q, ups, rho)
    c = -q + rho * ups
    surs = [penalty_surrogate(sc.theta[i], c[i], Xj, sc.lam_hat[i]) for i in range(3)]
    for tight in (False, True):
        step = WStep(3, sc.num_served, s, tight)
        step.set(data)
        for X in [Xj] + [_unit_ball(rng, 3, s) for _ in range(5)]:
            want = comm_part(sc.h, X, v, b, sc.omega) + sum(su.value(X, tight) for su in surs) / (2 * rho)
            assert data.value(X, tight) == pytest.approx(want, rel=1e-9, abs=1e-10)
            step.X.value = X
            offset = data.offset_tight if tight else data.offset_paper
            assert float(step.problem.objective.value) + offset == pytest.approx(want, rel=1e-9, abs=1e-10)
            # (59) majorises (50a) on the ball
            exact = comm_part(sc.h, X, v, b, sc.omega) + float(np.sum(np.abs(fim_values(sc.theta, X) + c) ** 2)) / (2 * rho)
            assert want >= exact - 1e-9
    # (38) at X_j: X_j itself satisfies it with equality of the linearisation (g0 = 1 after division)
    assert float(np.real(np.vdot(data.G, Xj))) == pytest.approx(2 * np.sum(np.abs(sc.g.conj() @ Xj) ** 2) / (1 + np.sum(np.abs(sc.g.conj() @ Xj) ** 2)))


# --- FP (31)-(34), (47)/(48) --------------------------------------------------------------------------------


def test_fp_auxiliaries_are_the_sinr_and_make_phi_tight(small_li):
    bp = BsProblem.from_instance(small_li, 1, np.arange(4) % 3)
    sc = scale_problem(bp)
    rng = np.random.default_rng(0)
    X = _unit_ball(rng, sc.num_antennas, sc.cols.size, radius=1.0)
    W = torch.as_tensor(sc.to_full(X))
    v, b = fp_auxiliaries(sc.h, sc.omega, X)
    np.testing.assert_allclose(v, bp.sinr(W).numpy()[bp.served_index], rtol=1e-10)  # (47): squares restored
    # (31)/(32) at v*, b* equal the objective (30) in nats
    assert fp_value(sc.h, sc.omega, X, v, b) == pytest.approx(math.log(2) * bp.objective(W), rel=1e-10)
    for _ in range(10):  # b* of (48) maximises (32) for fixed v
        bb = b + 0.1 * _rand(rng, b.size) * np.abs(b)
        assert fp_value(sc.h, sc.omega, X, v, bb) <= fp_value(sc.h, sc.omega, X, v, b) + 1e-12


def test_scaled_constraints_match_the_metrics(small_li):
    bp = BsProblem.from_instance(small_li, 0, np.arange(4) % 3)
    sc = scale_problem(bp)
    W = feasible_start(bp)
    X = sc.from_full(W)
    np.testing.assert_allclose(sc.to_full(X), W.numpy(), rtol=0, atol=1e-15)
    # (30a) with the margin: |g^H X|^2 (1 + margin) q_d / P_t... equals the radar SNR / Gamma_t
    from isac.solvers.li_beamforming import SENSING_MARGIN

    assert np.sum(np.abs(sc.g.conj() @ X) ** 2) * (1 + SENSING_MARGIN) == pytest.approx(bp.radar_snr(W) / bp.snr_min, rel=1e-10)
    # 1/CRB = t1 - |t2|^2/t3 from the scaled Q'
    Q = fim_values(sc.theta, X) * sc.scale
    assert 1.0 / (Q[0].real - abs(Q[1]) ** 2 / Q[2].real) == pytest.approx(bp.crb(W), rel=1e-8)
    assert crb_from_fim(Q) == pytest.approx(bp.crb(W), rel=1e-8)  # the trace's crb_rad2


# --- step 2: (49) in closed form vs the SDP ---------------------------------------------------------------------


def test_project_crb_set_solves_the_sdp():
    rng = np.random.default_rng(5)
    d1, d3 = 30.0, 2.0  # row scales (unequal, as in ScaledBs; moderate so that the reference SDP solves accurately)
    d2 = math.sqrt(d1 * d3 / 2)
    eps = 0.01
    c_min = 1 / (eps * d1)
    C = cp.Variable()
    q1, q3 = cp.Variable(), cp.Variable()
    q2 = cp.Variable(complex=True)
    z = cp.Parameter(3)
    z2 = cp.Parameter(complex=True)
    lmi = cp.bmat([[d1 * q1 - d1 * C, d2 * cp.real(q2), -d2 * cp.imag(q2)],
                   [d2 * cp.real(q2), d3 * q3, 0], [-d2 * cp.imag(q2), 0, d3 * q3]]) / d1  # (49c) in SI units
    prob = cp.Problem(cp.Minimize(cp.square(q1 - z[0]) + cp.square(cp.abs(q2 - z2)) + cp.square(q3 - z[2])),
                      [d1 * C >= 1 / eps, lmi >> 0])  # (49b): C^-1 <= eps
    cases = [np.array([c_min + 2.0, 0.1 + 0.2j, 1.0]),  # inside: q = z
             np.array([c_min - 3.0, 0.0, -2.0]),  # polar: the apex
             np.array([-1.0, 0.0, 4.0])]
    cases += [np.array([rng.normal(c_min, 2), rng.normal() + 1j * rng.normal(), rng.normal()]) for _ in range(8)]
    for zz in cases:
        z.value, z2.value = np.array([zz[0].real, 0.0, zz[2].real]), complex(zz[1])
        prob.solve(solver="CLARABEL")
        assert prob.status == cp.OPTIMAL
        q = project_crb_set(zz, c_min)
        want = np.array([q1.value, complex(q2.value), q3.value])
        np.testing.assert_allclose(q, want, atol=2e-5 * max(1.0, np.abs(zz).max()))
        assert float(np.sum(np.abs(q - zz) ** 2)) <= prob.value + 1e-7
        # q is feasible: (q1 - c_min) q3 >= |q2|^2 / 2 in scaled units, q1 >= c_min, q3 >= 0
        assert q[0].real >= c_min - 1e-12 and q[2].real >= -1e-12
        assert 2 * (q[0].real - c_min) * q[2].real >= abs(q[1]) ** 2 - 1e-9
    np.testing.assert_allclose(project_crb_set(cases[0], c_min), cases[0], atol=1e-14)


def test_projection_in_scaled_units_meets_the_si_lmi(small_li):
    """ScaledBs' row scales (d2 = sqrt(d1 d3 / 2)) make the scaled projection land in the SI-unit LMI (43d)."""
    inst = small_li.with_params(crb_max_rad2=1e-5)
    bp = BsProblem.from_instance(inst, 0, np.arange(4) % 3)
    sc = scale_problem(bp)
    rng = np.random.default_rng(2)
    X = sc.from_full(feasible_start(bp))
    Q = fim_values(sc.theta, X)
    for _ in range(20):
        z = Q + rng.normal(scale=0.5 * np.abs(Q).max(), size=3) * np.array([1, 1 + 1j, 1])
        q = project_crb_set(z, sc.c_min) * sc.scale  # SI units
        C = 1.0 / bp.crb_max_rad2
        lmi = np.array([[q[0].real - C, q[1].real, -q[1].imag], [q[1].real, q[2].real, 0], [-q[1].imag, 0, q[2].real]])
        ev = np.linalg.eigvalsh(lmi)
        assert ev[0] >= -1e-9 * abs(ev).max()
        if not np.allclose(project_crb_set(z, sc.c_min), z):  # projected: on the boundary, det = 0
            assert abs(ev[0]) <= 1e-7 * abs(ev).max()


def test_mm_surrogate_with_negative_definite_t():
    """lambda^+ = max(lambda_max(T), 0): with T < 0, (54) with lambda < 0 would not majorise inside the ball."""
    rng = np.random.default_rng(4)
    A = _rand(rng, 3, 3)
    theta = A @ A.conj().T / 10  # full-rank PSD, so T = 2 c Theta < 0 for c < 0
    c = -2.0
    lam_hat = kron_hermitian_max_eig(theta)
    for _ in range(10):
        Xj = _unit_ball(rng, 3, 2, radius=1.0)
        sur = penalty_surrogate(theta, c, Xj, lam_hat)
        assert sur.lam == 0.0
        for _ in range(10):
            X = _unit_ball(rng, 3, 2)
            assert sur.value(X) >= abs(np.vdot(X, theta @ X) + c) ** 2 - 1e-10


# --- the beamformer -----------------------------------------------------------------------------------------


def _check_returned(bp, res):
    assert res.W is not None
    assert not bp.violations(res.W), bp.violations(res.W)
    unserved = ~bp.served.numpy()
    assert np.all(res.W.numpy()[:, : bp.num_users][:, unserved] == 0)
    feasible_objs = [t["objective"] for t in res.trace if t["feasible"]]
    assert res.objective >= max(feasible_objs + [res.info["start_objective"]]) - 1e-12  # best feasible iterate kept
    for t in res.trace:
        assert {"objective", "rho", "constraint_residual", "feasible"} <= set(t)
        # Sec. V-B-4: every inner step lowers the augmented Lagrangian (44) (solver round-off aside)
        assert t["lagrangian_max_step_increase"] <= 1e-6 * max(1.0, t["lagrangian_scale"])
    rhos = [t["rho"] for t in res.trace]
    np.testing.assert_allclose(np.array(rhos[1:]) / np.array(rhos[:-1]), 0.9, rtol=1e-12)


def test_admm_registered_and_options_checked():
    assert beamformers()["admm"] is AdmmBeamformer
    assert isinstance(get_beamformer("admm", {"max_iterations": "5", "backend": "CLARABEL"}), AdmmBeamformer)
    with pytest.raises(OptionError):
        get_beamformer("admm", {"backend": "MOSEK"})
    with pytest.raises(OptionError):
        get_beamformer("admm", {"surrogate": "loose"})
    with pytest.raises(OptionError):
        get_beamformer("admm", {"rho_decay": 1.5})


@pytest.mark.parametrize("k", [0, 2])
def test_admm_improves_on_its_start_and_ends_feasible(small_li, k):
    bp = BsProblem.from_instance(small_li, k, np.arange(4) % 3)
    res = AdmmBeamformer(max_iterations=30).solve(bp)
    assert res.status in (Status.CONVERGED, Status.MAX_ITERATIONS), res.message
    _check_returned(bp, res)
    assert res.info["start"] == "feasible_start"
    start = bp.objective(feasible_start(bp))
    assert res.info["start_objective"] == pytest.approx(start)
    assert res.objective > start + 1.0  # bit/s/Hz (measured: ~4.5 -> ~15)


def test_admm_with_a_binding_crb(small_li):
    """epsilon below the CRB of the CRB-free solution: the start meets it, the comm-optimal beams do not."""
    assoc = np.arange(4) % 3
    bp_free = BsProblem.from_instance(small_li, 2, assoc)
    free = AdmmBeamformer(max_iterations=30).solve(bp_free)
    eps = 0.6 * bp_free.crb(free.W)
    bp = BsProblem.from_instance(small_li.with_params(crb_max_rad2=eps), 2, assoc)
    assert bp.sensing_unreachable() is None
    start = feasible_start(bp)
    assert not bp.violations(start)
    assert bp.violations(free.W)  # the CRB-free optimum violates the new epsilon
    res = AdmmBeamformer(max_iterations=40).solve(bp)
    if res.status in (Status.CONVERGED, Status.MAX_ITERATIONS):
        _check_returned(bp, res)
        assert res.objective > bp.objective(start)
        assert bp.crb(res.W) >= 0.5 * eps  # the bound is (nearly) active, not met with a wide margin
    else:  # an honest failure: no point claimed feasible
        assert res.status in (Status.INFEASIBLE, Status.NUMERICAL_ERROR)
        assert res.W is None or bp.violations(res.W) or res.status == Status.NUMERICAL_ERROR


def test_admm_small_preset_with_clarabel_and_tight_surrogate():
    inst = make_preset("multibs-association", "small", 1)
    bp = BsProblem.from_instance(inst, 0, np.arange(4) % 2)
    for opts in ({"backend": "CLARABEL"}, {"surrogate": "tight"}):
        res = AdmmBeamformer(max_iterations=30, **opts).solve(bp)
        assert res.status in (Status.CONVERGED, Status.MAX_ITERATIONS), res.message
        _check_returned(bp, res)
        assert res.objective > res.info["start_objective"]
        # the CRB binds on this BS: the ADMM passes through iterates that violate it and returns a feasible one
        assert any(not t["feasible"] for t in res.trace)


def test_admm_start_point_rules(small_li):
    bp = BsProblem.from_instance(small_li, 0, np.arange(4) % 3)
    init = initial_beams(bp)
    res = AdmmBeamformer(max_iterations=2).solve(bp, init)
    assert res.info["start"] == ("W0" if not bp.violations(init) else "feasible_start (W0 infeasible)")
    good = AdmmBeamformer(max_iterations=3).solve(bp)
    res = AdmmBeamformer(max_iterations=2).solve(bp, good.W)
    assert res.info["start"] == "W0"
    assert res.info["start_objective"] == pytest.approx(good.objective)
    assert res.objective >= good.objective - 1e-12


def test_admm_solver_failure_is_numerical_error(small_li, monkeypatch):
    bp = BsProblem.from_instance(small_li, 1, np.arange(4) % 3)
    monkeypatch.setattr(WStep, "solve", lambda self, *a: (None, "error", "SCS failed: test"))
    res = AdmmBeamformer(max_iterations=5).solve(bp)
    assert res.status == Status.NUMERICAL_ERROR
    assert "SCS failed" in res.message
    assert res.W is not None and not bp.violations(res.W)  # the (feasible) start is returned, labelled honestly


def test_admm_bs_without_users():
    inst = make_preset("multibs-association", "small", 0)
    bp = BsProblem.from_instance(inst, 1, np.zeros(4, dtype=int))  # BS 1 serves nobody
    res = AdmmBeamformer().solve(bp)
    assert res.status == Status.CONVERGED and res.objective == 0.0
    assert not bp.violations(res.W)
