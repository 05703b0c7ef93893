"""001's solvers (``exhaustive``, ``scheme1-3``) and their SDP core, against independent references.

References: the Fisher engine's CRLB for the FIM map; full enumeration of every (receiver,
association) for the branch and bound; a NumPy re-implementation of eq. (5) and the per-BS power
for feasibility; symmetries (BS relabelling, user and gain phases) and monotonicity in Gamma and
epsilon for the optimum.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from isac.metrics.bounds.xu import xu_crlb
from isac.scenario.problems import make_preset
from isac.solvers.registry import get_solver
from isac.solvers.xu_sdp import XuSdp, _position_gain_fim, fim_map

torch.set_num_threads(1)


def _inst(seed=1, **changes):
    inst = make_preset("bs-selection", "small", seed)
    return inst.with_params(**changes) if changes else inst


def _solve(inst, name="exhaustive", **opts):
    return get_solver("bs-selection", name, opts).solve(inst)


def _independent_check(inst, sol):
    """Power per BS, eq. (5) SINRs (NumPy), silence of the receiver and C4, recomputed here."""
    W, Rs, r = sol["W"].numpy(), sol["Rs"].numpy(), int(sol["receiver"])
    H = inst.H.numpy()
    S, N, K = W.shape
    power = (np.abs(W) ** 2).sum((1, 2)) + np.trace(Rs, axis1=1, axis2=2).real
    assert (power <= inst.p_max_w * (1 + 1e-9)).all() and power[r] <= 1e-9 * inst.p_max_w
    serving = (np.abs(W) ** 2).sum(1).argmax(0)
    assert ((np.abs(W) ** 2).sum(1) > 1e-9 * inst.p_max_w).sum(0).tolist() == [1] * K
    for k in range(K):
        sig = abs(H[serving[k], :, k].conj() @ W[serving[k], :, k]) ** 2
        intf = sum(abs(H[s, :, k].conj() @ W[s, :, j]) ** 2 for s in range(S) for j in range(K) if j != k)
        intf += sum((H[s, :, k].conj() @ Rs[s] @ H[s, :, k]).real for s in range(S))
        assert sig / (intf + inst.noise_comm_w) >= inst.sinr_min.numpy()[k] * (1 - 1e-7)
    crb = float(xu_crlb(inst.array, inst.bs_positions_m, inst.array_axes, inst.target_position_m, inst.alpha, r,
                        covariance=torch.as_tensor(np.einsum("snk,smk->snm", W, W.conj()) + Rs),
                        snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w))
    assert crb <= inst.crb_max_m2 * (1 + 1e-6)
    return float(power.sum())


def test_fim_map_reproduces_the_engines_crlb():
    inst = make_preset("bs-selection", "xu-fig2", 0)
    rng = np.random.default_rng(3)
    for r in (0, 2):
        fm = fim_map(inst, r)
        cov = torch.zeros(inst.num_bs, inst.num_antennas, inst.num_antennas, dtype=torch.complex128)
        C = {}
        for t in fm.transmitters:
            A = rng.normal(size=(inst.num_antennas, 2)) + 1j * rng.normal(size=(inst.num_antennas, 2))
            C[t] = A @ A.conj().T
            cov[t] = torch.as_tensor(C[t])
        J = fm.evaluate(C)
        np.testing.assert_allclose(J, _position_gain_fim(inst, r, cov).numpy(), rtol=1e-12, atol=0)
        crlb_map = np.trace(np.linalg.inv(J)[:2, :2])
        crlb_engine = float(xu_crlb(inst.array, inst.bs_positions_m, inst.array_axes, inst.target_position_m,
                                    inst.alpha, r, covariance=cov, snapshots=inst.snapshots,
                                    noise_power_w=inst.noise_sense_w))
        assert crlb_map == pytest.approx(crlb_engine, rel=1e-9)


def test_crlb_is_infinite_when_every_transmitter_is_rank_one():
    inst = _inst()
    rng = np.random.default_rng(0)
    beams = torch.as_tensor(rng.normal(size=(3, 4, 1)) + 1j * rng.normal(size=(3, 4, 1)))
    crb = xu_crlb(inst.array, inst.bs_positions_m, inst.array_axes, inst.target_position_m, inst.alpha, 0,
                  beams=beams, snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w)
    assert math.isinf(float(crb))


@pytest.mark.parametrize("seed", [1, 2])
def test_exhaustive_equals_full_enumeration_and_is_feasible(seed):
    inst = _inst(seed)
    sdp = XuSdp(inst)
    S, K = inst.num_bs, inst.num_users
    best = math.inf
    for r in range(S):
        tx = [t for t in range(S) if t != r]
        for a in itertools.product(tx, repeat=K):
            res = sdp.solve(r, a)
            assert res.status in ("optimal", "infeasible")
            if res.status == "optimal":
                best = min(best, res.power_w)
    out = _solve(inst)
    assert out.status.value == "CONVERGED" and out.metrics["feasible"]
    assert out.metrics["total_power_w"] == pytest.approx(best, rel=1e-4)
    assert _independent_check(inst, out.solution) == pytest.approx(out.metrics["total_power_w"], rel=1e-12)
    assert out.info["sdps"] <= S * (1 + (S - 1) ** K)  # roots + at most every leaf
    assert out.info["gap"] <= 1e-3
    # Theorem 1, testable form: the rank-one beams keep the SDP's power.
    assert out.metrics["total_power_w"] == pytest.approx(out.info["sdp_power_w"], rel=1e-3)
    assert out.metrics["total_power_w"] >= out.info["sdp_power_w"] * (1 - 1e-6)


def _relabel(inst, perm):
    p = torch.as_tensor(perm)
    return inst.with_params(bs_positions_m=inst.bs_positions_m[p], array_axes=inst.array_axes[p], H=inst.H[p],
                            alpha=inst.alpha[p][:, p])


def test_symmetries_bs_relabelling_and_phases_leave_the_optimum_unchanged():
    inst = _inst(1)
    ref = _solve(inst)
    perm = [2, 0, 1]
    rel = _solve(_relabel(inst, perm))
    assert rel.metrics["total_power_w"] == pytest.approx(ref.metrics["total_power_w"], rel=1e-4)
    assert perm[int(rel.solution["receiver"])] == int(ref.solution["receiver"])
    rng = np.random.default_rng(5)
    ph_u = torch.as_tensor(np.exp(2j * np.pi * rng.uniform(size=inst.num_users)))
    ph_a = torch.as_tensor(np.exp(2j * np.pi * rng.uniform(size=(inst.num_bs, inst.num_bs))))
    rot = _solve(inst.with_params(H=inst.H * ph_u, alpha=inst.alpha * ph_a))
    assert rot.metrics["total_power_w"] == pytest.approx(ref.metrics["total_power_w"], rel=1e-4)


def test_optimum_is_monotone_in_gamma_and_epsilon():
    inst = _inst(2)
    base = _solve(inst).metrics["total_power_w"]
    harder = _solve(inst.with_params(sinr_min_db=inst.sinr_min_db + 3.0)).metrics["total_power_w"]
    looser = _solve(inst.with_params(crb_max_m2=2 * inst.crb_max_m2)).metrics["total_power_w"]
    assert harder > base > looser


@pytest.mark.parametrize("changes, words", [({"crb_max_m2": 1e-9}, "C2"), ({"sinr_min_db": torch.full((2,), 80.0)}, "C3")])
def test_unreachable_targets_are_infeasible_for_every_method_with_the_constraint_named(changes, words):
    inst = _inst(1, **changes)
    out = _solve(inst)
    assert out.status.value == "INFEASIBLE" and not out.solution and "proved infeasible" in out.message
    assert words in out.message
    for name in ("scheme1", "scheme2", "scheme3"):
        r = _solve(inst, name)
        assert r.status.value == "INFEASIBLE" and not r.solution, (name, r.message)


def test_schemes_are_feasible_never_below_the_optimum_and_deterministic():
    inst = _inst(1)
    opt = _solve(inst).metrics["total_power_w"]
    for name in ("scheme1", "scheme2", "scheme3"):
        r = _solve(inst, name)
        if r.status.value == "INFEASIBLE":
            continue  # a scheme's fixed choice may admit no beams
        assert r.status.value == "CONVERGED" and r.metrics["feasible"], (name, r.message)
        assert r.metrics["total_power_w"] >= opt * (1 - 1e-4)
        _independent_check(inst, r.solution)
    a, b = _solve(inst, "scheme2"), _solve(inst, "scheme2")
    assert a.info["receiver"] == b.info["receiver"] and a.info["association"] == b.info["association"]
    s1 = _solve(inst, "scheme1")
    d = torch.linalg.vector_norm(inst.bs_positions_m - inst.target_position_m, dim=-1)
    assert s1.info["receiver"] == int(d.argmin())
    s3 = _solve(inst, "scheme3", pair="fixed")
    if s3.solution:
        W = s3.solution["W"]
        assert int(s3.solution["receiver"]) == 1 and float(W[2].abs().max()) == 0.0  # BS 3 silent


def test_max_sdps_caps_the_search():
    out = _solve(make_preset("bs-selection", "xu-fig2", 0), max_sdps=3)
    assert out.status.value in ("MAX_ITERATIONS", "NUMERICAL_ERROR")
    assert out.info["sdps"] <= 4
    if out.solution:
        assert out.metrics["feasible"] and out.info["gap"] > 0
