"""Per-BS beamforming of ``multibs-association`` (000 (P3.k)): sensing facts, starts, ``zf-ns`` and ``fast``.

References are independent of the code under test: the numpy formulas of 000 in ``test_li``
(eqs. (8), (18), (22) with (64)-(66)), CVXPY solutions of the same convex subproblems written
a second way, and random search.
"""

import math

import cvxpy as cp
import numpy as np
import pytest
import torch

from test_li import np_steer, paper_crb, paper_snr
from isac.scenario.problems import make_preset
from isac.solvers.base import OptionError, Status
from isac.solvers.li_beamforming import (
    SENSING_MARGIN, BsProblem, FastBeamformer, ZfNullSpaceBeamformer, _WStep, feasible_start, get_beamformer,
    initial_beams, zf_power_allocation,
)

ASSOC = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def problems(seed=0, **params):
    inst = make_preset("multibs-association", "li", seed, **params)
    return inst, [BsProblem.from_instance(inst, k, ASSOC[: inst.num_users] % inst.num_bs) for k in range(inst.num_bs)]


def np_objective(bp, W):
    """(30) from eq. (8) written out: mean log2(1 + SINR) over the served CUs."""
    H, W = bp.H.numpy(), np.asarray(W)
    out = []
    for i in np.flatnonzero(bp.served.numpy()):
        p = np.abs(H[:, i].conj() @ W) ** 2
        out.append(math.log2(1 + p[i] / (p.sum() - p[i] + bp.noise_comm_w)))
    return float(np.mean(out))


def paper_feasible(bp, W):
    W = np.asarray(W)
    snr = paper_snr(bp.det_angle_rad, bp.det_echo_power_gain, W, bp.rcs_variance, bp.noise_radar_w)
    crb = paper_crb(bp.est_angle_rad, bp.est_rcs, bp.est_echo_power_gain, W, bp.snapshots, bp.noise_radar_w)
    power = float((np.abs(W) ** 2).sum())
    return snr >= bp.snr_min * (1 - 1e-6) and crb <= bp.crb_max_rad2 * (1 + 1e-6) and power <= bp.p_max_w * (1 + 1e-6)


# --- sensing facts ------------------------------------------------------------------------------


def test_crb_surrogate_is_a_bound_and_tight_for_rank_one():
    _, bps = problems(1)
    bp = bps[0]
    gen = np.random.default_rng(0)
    M, S = bp.num_antennas, bp.num_streams
    a = np_steer(M, bp.est_angle_rad)[0]
    # the surrogate constant recomputed here: 1/CRB >= kappa ||a_dot_perp||^2 a^H R a
    ad = np_steer(M, bp.est_angle_rad)[1]
    ad_perp = ad - a * (a.conj() @ ad) / M
    kappa = 2 * bp.snapshots * abs(bp.est_rcs) ** 2 * bp.est_echo_power_gain / (M**2 * bp.noise_radar_w)
    c = kappa * np.sum(np.abs(ad_perp) ** 2)
    assert c == pytest.approx(1.0 / (bp.crb_max_rad2 * bp.crb_beam_power_min), rel=1e-12)
    for rank in (1, 1, 2, 5, S):
        W = (gen.standard_normal((M, rank)) + 1j * gen.standard_normal((M, rank))) * 0.1
        W = np.concatenate([W, np.zeros((M, S - rank))], axis=1)
        inv_crb = 1.0 / paper_crb(bp.est_angle_rad, bp.est_rcs, bp.est_echo_power_gain, W, bp.snapshots, bp.noise_radar_w)
        bound = c * float(np.sum(np.abs(a.conj() @ W) ** 2))
        if rank == 1:
            assert inv_crb == pytest.approx(bound, rel=1e-9)
        else:
            assert inv_crb >= bound * (1 - 1e-12)


def test_reachability_is_exact():
    inst, bps = problems(2)
    bp = bps[1]
    M, P = bp.num_antennas, bp.p_max_w
    a = np_steer(M, bp.det_angle_rad)[0]
    full = np.zeros((M, bp.num_streams), complex)
    full[:, -1] = math.sqrt(P / M) * a  # all power along the target: the largest ||a^H W||^2 = M P
    best_db = 10 * math.log10(paper_snr(bp.det_angle_rad, bp.det_echo_power_gain, full, bp.rcs_variance, bp.noise_radar_w))
    gen = np.random.default_rng(1)
    for _ in range(200):  # no random beam of power P beats it
        W = gen.standard_normal((M, bp.num_streams)) + 1j * gen.standard_normal((M, bp.num_streams))
        W *= math.sqrt(P) / np.linalg.norm(W)
        assert np.sum(np.abs(a.conj() @ W) ** 2) <= M * P * (1 + 1e-12)
    ok = BsProblem.from_instance(inst.with_params(snr_min_db=best_db - 0.01), 1, ASSOC)
    bad = BsProblem.from_instance(inst.with_params(snr_min_db=best_db + 0.01), 1, ASSOC)
    assert ok.sensing_unreachable() is None
    msg = bad.sensing_unreachable()
    assert "BS 1" in msg and "radar SNR" in msg and "(27a)" in msg
    assert ZfNullSpaceBeamformer().solve(bad).status is Status.INFEASIBLE
    # the CRB at full power along a_e is the smallest; epsilon below it is unreachable
    a_e = np_steer(M, bp.est_angle_rad)[0]
    full[:, -1] = math.sqrt(P / M) * a_e
    crb_min = paper_crb(bp.est_angle_rad, bp.est_rcs, bp.est_echo_power_gain, full, bp.snapshots, bp.noise_radar_w)
    assert BsProblem.from_instance(inst.with_params(crb_max_rad2=crb_min * 1.01), 1, ASSOC).sensing_unreachable() is None
    msg = BsProblem.from_instance(inst.with_params(crb_max_rad2=crb_min * 0.99), 1, ASSOC).sensing_unreachable()
    assert "CRB" in msg and "(27b)" in msg


def test_initial_beams_maximise_received_power_and_are_rank_one():
    _, bps = problems(3)
    bp = bps[2]
    W = initial_beams(bp).numpy()
    M = bp.num_antennas
    rows = [bp.det_echo_power_gain**0.25 * np_steer(M, bp.det_angle_rad)[0].conj() / math.sqrt(M),
            bp.est_echo_power_gain**0.25 * np_steer(M, bp.est_angle_rad)[0].conj() / math.sqrt(M)]
    rows += [bp.H.numpy()[:, i].conj() for i in np.flatnonzero(bp.served.numpy())]
    C = np.stack(rows)
    value = np.linalg.norm(C @ W) ** 2
    assert value == pytest.approx(np.linalg.norm(C, 2) ** 2 * bp.p_max_w, rel=1e-10)  # sigma_max^2 P
    assert np.linalg.matrix_rank(W, tol=1e-9 * np.abs(W).max()) == 1
    assert np.sum(np.abs(W) ** 2) == pytest.approx(bp.p_max_w, rel=1e-12)
    assert np.array_equal(W, initial_beams(bp).numpy())  # deterministic


# --- constructions --------------------------------------------------------------------------------


def test_zf_ns_interference_free_and_feasible():
    _, bps = problems(4)
    for bp in bps:
        r = ZfNullSpaceBeamformer().solve(bp)
        assert r.status is Status.CONVERGED
        W = r.W.numpy()
        idx = np.flatnonzero(bp.served.numpy())
        G = bp.H.numpy()[:, idx].conj().T @ W  # served CUs x all columns
        signal = np.abs(np.diag(G[:, idx])) ** 2
        G[np.arange(idx.size), idx] = 0
        assert np.abs(G).max() ** 2 <= 1e-20 * signal.min()  # ZF and null-space radar: no interference
        assert paper_feasible(bp, W)
        assert r.objective == pytest.approx(np_objective(bp, W), rel=1e-12)


def test_zf_power_allocation_matches_cvxpy():
    _, bps = problems(5)
    bp = bps[0]
    W = zf_power_allocation(bp).numpy()
    assert paper_feasible(bp, W)
    # the same concave power program in CVXPY, from the ZF directions
    idx = np.flatnonzero(bp.served.numpy())
    zf = ZfNullSpaceBeamformer().solve(bp).W.numpy()
    D = np.concatenate([zf[:, idx], zf[:, bp.num_users:bp.num_users + 2]], axis=1)
    D = D / np.linalg.norm(D, axis=0)
    g = np.abs(np.einsum("mi,mi->i", bp.H.numpy()[:, idx].conj(), D[:, : idx.size])) ** 2 / bp.noise_comm_w
    p = cp.Variable(D.shape[1], nonneg=True)
    rows = [(np.abs(np_steer(bp.num_antennas, ang)[0].conj() @ D) ** 2) / q
            for ang, q in ((bp.det_angle_rad, bp.snr_beam_power_min), (bp.est_angle_rad, bp.crb_beam_power_min))]
    prob = cp.Problem(cp.Maximize(cp.sum(cp.log(1 + cp.multiply(g * bp.p_max_w, p[: idx.size] / bp.p_max_w)))),
                      [cp.sum(p) <= bp.p_max_w] + [r @ p >= 1.0 * (1 + 2 * SENSING_MARGIN) for r in rows])
    prob.solve(solver="CLARABEL")
    ref = float(np.mean(np.log2(1 + g * p.value[: idx.size])))
    assert np_objective(bp, W) == pytest.approx(ref, abs=1e-5)
    assert np_objective(bp, W) >= np_objective(bp, zf)


def test_wstep_dual_matches_cvxpy_qcqp():
    gen = np.random.default_rng(7)
    M, S = 5, 4
    for trial in range(3):
        Hh = gen.standard_normal((M, 3)) + 1j * gen.standard_normal((M, 3))
        A = Hh @ Hh.conj().T / 3
        A = A / np.linalg.eigvalsh(A)[-1]
        C = (gen.standard_normal((M, S)) + 1j * gen.standard_normal((M, S))) * 0.5
        Bs = [(gen.standard_normal((M, S)) + 1j * gen.standard_normal((M, S))) * (1.0 + trial) for _ in range(2)]
        Y = _WStep(A, C, Bs).solve()
        X = cp.Variable((M, S), complex=True)
        obj = 2 * cp.real(cp.trace(C.conj().T @ X)) - cp.sum([cp.quad_form(X[:, j], A) for j in range(S)])
        cons = [cp.sum_squares(X) <= 1] + [2 * cp.real(cp.trace(B.conj().T @ X)) >= 1 for B in Bs]
        prob = cp.Problem(cp.Maximize(obj), cons)
        prob.solve(solver="CLARABEL")

        def value(Z):
            return float(2 * np.real(np.trace(C.conj().T @ Z)) - np.real(np.trace(Z.conj().T @ A @ Z)))

        assert np.sum(np.abs(Y) ** 2) <= 1 + 1e-9
        for B in Bs:
            assert 2 * np.real(np.trace(B.conj().T @ Y)) >= 1 - 1e-9
        assert value(Y) == pytest.approx(prob.value, abs=1e-6)


# --- fast -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 6])
def test_fast_feasible_monotone_and_beats_constructions(seed):
    _, bps = problems(seed)
    for bp in bps:
        r = FastBeamformer().solve(bp)
        assert r.status in (Status.CONVERGED, Status.MAX_ITERATIONS), r.message
        W = r.W.numpy()
        assert paper_feasible(bp, W)
        assert r.objective == pytest.approx(np_objective(bp, W), rel=1e-10)
        unserved = ~bp.served.numpy()
        assert np.all(W[:, : bp.num_users][:, unserved] == 0)
        objs = [t["objective"] for t in r.trace]
        assert all(b >= a for a, b in zip(objs, objs[1:]))
        for other in (ZfNullSpaceBeamformer().solve(bp).W, feasible_start(bp)):
            assert r.objective >= np_objective(bp, other.numpy())


def test_fast_with_binding_crb_stays_feasible():
    inst, _ = problems(8)
    zf_bp = BsProblem.from_instance(inst, 0, ASSOC)
    W = FastBeamformer().solve(zf_bp).W.numpy()
    crb = paper_crb(zf_bp.est_angle_rad, zf_bp.est_rcs, zf_bp.est_echo_power_gain, W, zf_bp.snapshots,
                    zf_bp.noise_radar_w)
    tight = BsProblem.from_instance(inst.with_params(crb_max_rad2=crb * 0.3), 0, ASSOC)
    assert not paper_feasible(tight, W)  # the unconstrained optimum now violates (30b)
    r = FastBeamformer().solve(tight)
    assert r.status in (Status.CONVERGED, Status.MAX_ITERATIONS), r.message
    assert paper_feasible(tight, r.W.numpy())
    assert r.objective <= np_objective(zf_bp, W) + 1e-9


def test_fast_serves_nobody_and_small_sizes():
    inst = make_preset("multibs-association", "small", 1)
    bp = BsProblem.from_instance(inst, 0, np.array([1, 1, 1, 1]))  # BS 0 serves nobody
    r = FastBeamformer().solve(bp)
    assert r.status is Status.CONVERGED and r.objective == 0.0 and paper_feasible(bp, r.W.numpy())
    bp = BsProblem.from_instance(inst, 1, np.array([1, 1, 1, 1]))  # 4 CUs on 4 antennas: no ZF null space
    assert ZfNullSpaceBeamformer().solve(bp).status is Status.INFEASIBLE
    r = FastBeamformer().solve(bp)
    assert r.status in (Status.CONVERGED, Status.MAX_ITERATIONS) and paper_feasible(bp, r.W.numpy())


def test_beamformer_registry_and_options():
    assert {"fast", "zf-ns", "admm"} <= set(get_beamformer.__globals__["beamformers"]())
    assert get_beamformer("fast", {"max_iterations": "5"}).max_iterations == 5
    with pytest.raises(OptionError, match="no option"):
        get_beamformer("fast", {"nope": 1})
    with pytest.raises(OptionError, match="unknown beamformer"):
        get_beamformer("nope")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_reaches_admm_on_small_instances(seed):
    inst = make_preset("multibs-association", "li", seed, num_antennas=6, num_users=4)
    for k in range(inst.num_bs):
        bp = BsProblem.from_instance(inst, k, np.array([0, 1, 2, 0]))
        fast, admm = FastBeamformer().solve(bp), get_beamformer("admm").solve(bp)
        assert admm.status in (Status.CONVERGED, Status.MAX_ITERATIONS), admm.message
        assert paper_feasible(bp, fast.W.numpy())
        assert fast.objective >= admm.objective - 1e-9, (seed, k, fast.objective, admm.objective)
