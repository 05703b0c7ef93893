"""``beampattern-sinr`` (004, Zhao et al.): beampattern metrics, instances, evaluator, ZF/MRT baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from helpers import assert_close, autograd_grad, central_difference_grad, crandn
from isac.metrics.beampattern import (
    angle_grid_deg, beampattern, beampattern_from_covariance, beampattern_mse, covariance, desired_beampattern,
    optimal_beta, steering_matrix,
)
from isac.metrics.evaluate import evaluate
from isac.metrics.problems.beampattern_sinr import objective_terms
from isac.scenario.arrays import zhao_ula
from isac.scenario.instances.beampattern_sinr import (
    FAMILY, PROBLEM, BeampatternSinrInstance, decode_solution, encode_solution, make_small, make_zhao,
    make_zhao_dynamic, make_zhao_fixed_a, make_zhao_fixed_b, reflect_into, zhao_user_track,
)
from isac.scenario.io import InstanceError
from isac.solvers.base import Status
from isac.solvers.beampattern_baselines import BeampatternMRT, BeampatternZF, null_space_basis
from isac.solvers.registry import get_solver, solvers_for


def _random_beams(gen, *batch, m=4, l=2):
    return crandn(gen, *batch, m, l), crandn(gen, *batch, m, m)


def _sinr_eq9(H, C, S, noise):
    """004 eq. (9), third line, written independently of isac.metrics.comm: h^H C_l h / (h^H (R - C_l) h + s2)."""
    R = C @ C.conj().T + S @ S.conj().T
    out = []
    for l in range(H.shape[1]):
        h = H[:, l]
        Cl = torch.outer(C[:, l], C[:, l].conj())
        out.append(float((h.conj() @ Cl @ h).real / ((h.conj() @ (R - Cl) @ h).real + noise)))
    return torch.tensor(out, dtype=torch.float64)


# --- grid, desired pattern, steering convention ------------------------------


def test_grid_is_half_open_and_matches_paper_sizes():
    g = angle_grid_deg(-90, 90, 1)
    assert g.shape == (180,) and g[0] == -90 and g[-1] == 89
    # 004 Table II: N = 180, 60, 30, 10.
    assert [angle_grid_deg(-90, 90, s).numel() for s in (1, 3, 6, 18)] == [180, 60, 30, 10]


def test_desired_pattern_windows_are_closed_eq34():
    grid = angle_grid_deg(-90, 90, 1)
    b = desired_beampattern(grid, torch.tensor([-40.0, 0.0, 40.0], dtype=torch.float64), 10.0)
    expected = [1.0 if any(abs(t - c) <= 5 for c in (-40, 0, 40)) else 0.0 for t in range(-90, 90)]
    assert b.tolist() == expected
    assert int(b.sum()) == 33  # three closed windows of 11 one-degree points
    # Batched targets.
    bb = desired_beampattern(grid, torch.tensor([[-40.0, 0.0, 40.0], [-40.0, 15.0, 30.0]], dtype=torch.float64), 10.0)
    assert torch.equal(bb[0], b)
    assert int(bb[1].sum()) == 33


def test_zhao_steering_convention():
    """a(theta) = [1, ..., exp(-j 2 pi (M-1) Delta sin theta)] with Delta = 1/2 (004 Sec. II-A)."""
    m, theta = 6, torch.tensor([-33.0, 0.0, 17.5], dtype=torch.float64)
    A = steering_matrix(zhao_ula(m), theta)
    idx = np.arange(m)
    ref = np.exp(-1j * 2 * np.pi * 0.5 * idx[None, :] * np.sin(np.deg2rad(theta.numpy()))[:, None])
    assert_close(A, torch.as_tensor(ref), rtol=1e-13, what="steering")


# --- beampattern and MSE ------------------------------------------------------


def test_beampattern_equals_quadratic_form():
    gen = torch.Generator().manual_seed(0)
    C, S = _random_beams(gen, m=5, l=3)
    A = steering_matrix(zhao_ula(5), angle_grid_deg(-90, 90, 7))
    R = covariance(C, S)
    p = beampattern(A, C, S)
    direct = torch.stack([(a.conj() @ R @ a).real for a in A])
    assert_close(p, direct, rtol=1e-12, what="pattern vs a^H R a")
    assert_close(beampattern_from_covariance(A, R), direct, rtol=1e-12, what="covariance form")
    assert bool((p >= 0).all())


def test_beta_closed_form_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    C, S = _random_beams(gen, m=6, l=2)
    grid = angle_grid_deg(-90, 90, 1)
    b = desired_beampattern(grid, torch.tensor([-20.0, 35.0], dtype=torch.float64), 10.0)
    p = beampattern(steering_matrix(zhao_ula(6), grid), C, S)
    mse, beta = beampattern_mse(b, p)

    def loss(x):
        return float(((x * b - p) ** 2).mean())

    res = minimize_scalar(loss, bracket=(0.0, 1.0), tol=1e-12)
    assert abs(float(beta) - res.x) <= 1e-6 * abs(res.x)
    assert abs(float(mse) - res.fun) <= 1e-9 * res.fun
    # b in {0, 1}: beta* is the mean pattern inside the windows.
    assert_close(beta, p[b > 0].mean(), rtol=1e-12, what="beta = window mean")
    # Any other beta is worse.
    for d in (-1e-2, 1e-2):
        assert float(beampattern_mse(b, p, beta + d)[0]) > float(mse)


def test_beta_is_zero_when_no_grid_point_is_in_a_window():
    p = torch.rand(10, dtype=torch.float64)
    b = torch.zeros(10, dtype=torch.float64)
    mse, beta = beampattern_mse(b, p)
    assert float(beta) == 0.0
    assert_close(mse, (p**2).mean(), rtol=1e-14)
    assert float(optimal_beta(b, p)) == 0.0


@pytest.mark.parametrize("wrt", ["C", "S"])
def test_mse_gradient_matches_central_differences(wrt):
    inst = make_small(3)
    gen = torch.Generator().manual_seed(2)
    C, S = _random_beams(gen, m=4, l=2)
    C, S = 0.3 * C, 0.3 * S

    def f(X):
        cc, ss = (X, S) if wrt == "C" else (C, X)
        return objective_terms(inst, cc, ss)["beampattern_mse"]

    X = C if wrt == "C" else S
    g_fd = central_difference_grad(f, X, h=1e-6)
    g_ad = autograd_grad(f, X)
    assert float(g_ad.abs().max()) > 1e-3  # not trivially zero
    assert_close(g_ad, g_fd, rtol=1e-6, atol=1e-8 * float(g_fd.abs().max()), what=f"dMSE/d{wrt}")


def test_invariance_to_beam_phases_and_unitary_sensing_rotation():
    inst = make_zhao_fixed_a(4)
    gen = torch.Generator().manual_seed(5)
    C, S = _random_beams(gen, m=10, l=2)
    base = objective_terms(inst, C, S)
    phases = torch.exp(1j * torch.tensor([0.7, -2.1], dtype=torch.float64))
    Q, _ = torch.linalg.qr(crandn(gen, 10, 10))
    rot = objective_terms(inst, C * phases, S @ Q)
    for key in ("beampattern", "beampattern_mse", "beta", "sinr", "power_w"):
        assert_close(rot[key], base[key], rtol=1e-10, what=key)


def test_mse_scales_quadratically_with_power():
    inst = make_zhao(6)
    gen = torch.Generator().manual_seed(6)
    C, S = _random_beams(gen, m=10, l=2)
    t = 2.5
    a = objective_terms(inst, C, S)["beampattern_mse"]
    b = objective_terms(inst, math.sqrt(t) * C, math.sqrt(t) * S)["beampattern_mse"]
    assert_close(b, t**2 * a, rtol=1e-12)


def test_batched_equals_looped():
    inst = make_zhao(7)
    gen = torch.Generator().manual_seed(7)
    C, S = _random_beams(gen, 3, 2, m=10, l=2)
    batched = objective_terms(inst, C, S)
    for i in range(3):
        for j in range(2):
            one = objective_terms(inst, C[i, j], S[i, j])
            for key, v in one.items():
                assert_close(batched[key][i, j], v, rtol=1e-12, what=key)


def test_sinr_matches_eq9():
    inst = make_zhao(8)
    gen = torch.Generator().manual_seed(8)
    C, S = _random_beams(gen, m=10, l=2)
    C, S = 1e-1 * C, 1e-1 * S
    assert_close(objective_terms(inst, C, S)["sinr"], _sinr_eq9(inst.H, C, S, inst.noise_w), rtol=1e-10)


# --- instance format and presets ---------------------------------------------


@pytest.mark.parametrize("preset", ["zhao", "zhao-fixed-a", "zhao-fixed-b", "small"])
def test_json_round_trip_exact(preset):
    inst = FAMILY.presets[preset](11)
    back = BeampatternSinrInstance.from_dict(json.loads(json.dumps(inst.to_dict())))
    for name in ("H", "target_angles_deg", "user_positions_m", "bs_position_m"):
        assert torch.equal(getattr(back, name), getattr(inst, name)), name
    for name in ("num_antennas", "power_w", "noise_w", "sinr_db", "beam_width_deg", "grid_deg", "spacing_wavelengths"):
        assert getattr(back, name) == getattr(inst, name), name
    assert back.to_dict() == inst.to_dict()
    gen = torch.Generator().manual_seed(0)
    sol = {"C": crandn(gen, inst.num_antennas, inst.num_users), "S": crandn(gen, inst.num_antennas, inst.num_antennas)}
    dec = decode_solution(json.loads(json.dumps(encode_solution(sol))), inst)
    assert torch.equal(dec["C"], sol["C"]) and torch.equal(dec["S"], sol["S"])


def _bad(mutate):
    obj = make_small(0).to_dict()
    mutate(obj)
    with pytest.raises(InstanceError) as e:
        BeampatternSinrInstance.from_dict(obj)
    return str(e.value)


def test_bad_input_errors_name_the_key():
    assert _bad(lambda o: o.update(extra=1)).startswith("extra: unknown key")
    assert _bad(lambda o: o["params"].update(p_max_dbm=3)).startswith("params.p_max_dbm: unknown key")
    assert _bad(lambda o: o.pop("target_angles_deg")).startswith("target_angles_deg: missing")
    assert _bad(lambda o: o.update(H={"re": [[1.0, 0.0]] * 3, "im": [[0.0, 1.0]] * 3})).startswith("H: expected shape")

    def nan_h(o):
        o["H"]["re"][0][0] = float("nan")

    assert _bad(nan_h).startswith("H: contains NaN")
    assert _bad(lambda o: o["params"].update(power_w=-1.0)).startswith("params.power_w: must be > 0")
    assert _bad(lambda o: o["params"].update(noise_w=0.0)).startswith("params.noise_w")
    assert _bad(lambda o: o["params"].update(grid_deg=[10, -10, 1])).startswith("params.grid_deg")
    assert _bad(lambda o: o["params"].update(grid_deg=[-90, 90, 0])).startswith("params.grid_deg")
    assert _bad(lambda o: o.update(target_angles_deg=[95.0])).startswith("target_angles_deg")
    assert _bad(lambda o: o["params"].update(beam_width_deg=0)).startswith("params.beam_width_deg")

    def zero_col(o):
        for part in ("re", "im"):
            for row in o["H"][part]:
                row[1] = 0.0

    assert _bad(zero_col).startswith("H: column 1 is zero")
    inst = make_small(0)
    with pytest.raises(InstanceError, match=r"^S: expected shape \[4, 4\]"):
        decode_solution({"C": {"re": [[0.0] * 2] * 4, "im": [[0.0] * 2] * 4},
                         "S": {"re": [[0.0] * 3] * 4, "im": [[0.0] * 3] * 4}}, inst)
    with pytest.raises(InstanceError, match=r"^W: unknown key"):
        decode_solution({"W": 1}, inst)


def test_preset_geometry_targets_and_overrides():
    for seed in range(20):
        inst = make_zhao(seed)
        assert inst.H.shape == (10, 2) and inst.num_targets == 3
        u = inst.user_positions_m
        assert bool(((u[:, 0] >= 5) & (u[:, 0] <= 35) & (u[:, 1] >= -35) & (u[:, 1] <= 35) & (u[:, 2] == 0)).all())
        t = inst.target_angles_deg.sort().values
        assert bool((t >= -60).all() and (t <= 60).all())
        assert float((t[1:] - t[:-1]).min()) >= 10.0 - 1e-12  # windows do not overlap
    assert make_zhao_fixed_a(1).target_angles_deg.tolist() == [-40.0, 0.0, 40.0]
    assert make_zhao_fixed_b(1).target_angles_deg.tolist() == [-40.0, 15.0, 30.0]
    assert torch.equal(make_zhao(3).H, make_zhao(3).H) and not torch.equal(make_zhao(3).H, make_zhao(4).H)
    big = make_zhao(2, num_users=3, num_targets=4, sinr_db=5.0)
    assert big.H.shape == (10, 3) and big.num_targets == 4 and big.sinr_db == 5.0
    small = make_small(0)
    assert small.H.shape == (4, 2) and small.num_targets == 1


def _reflect_by_hand(v, low, high):
    """Mirror at the ends one bounce at a time (independent of the closed-form fold)."""
    while v < low or v > high:
        v = 2 * low - v if v < low else 2 * high - v
    return v


def test_reflection_matches_bouncing_one_mirror_at_a_time():
    vals = np.concatenate([np.linspace(-200.0, 250.0, 901), [5.0, 35.0, 4.999, 35.001]])
    folded = reflect_into(vals, 5.0, 35.0)
    assert np.allclose(folded, [_reflect_by_hand(v, 5.0, 35.0) for v in vals], atol=1e-12)


def test_dynamic_users_take_bounded_steps_inside_the_region():
    """004 Sec. IV-B: per slot, |dx| <= 1 m and |dy| <= 2 m; reflection never lengthens a step."""
    track = np.stack([zhao_user_track(11, 3, t) for t in range(60)])  # [T, L, 2]
    steps = np.abs(np.diff(track, axis=0))
    assert steps[..., 0].max() <= 1.0 + 1e-12 and steps[..., 1].max() <= 2.0 + 1e-12
    assert steps.min() >= 0 and steps[..., 1].mean() > 0.5  # users do move
    assert track[..., 0].min() >= 5 and track[..., 0].max() <= 35
    assert track[..., 1].min() >= -35 and track[..., 1].max() <= 35
    # Slot 0 is the i.i.d. preset's user draw; fading is drawn afresh per slot, reproducibly.
    assert np.allclose(zhao_user_track(4, 2, 0), make_zhao(4).user_positions_m[:, :2].numpy())
    a, b = make_zhao_dynamic(4, slot=5), make_zhao_dynamic(4, slot=6)
    assert torch.equal(a.H, make_zhao_dynamic(4, slot=5).H) and not torch.equal(a.H, b.H)
    assert a.target_angles_deg.tolist() == [-40.0, 15.0, 30.0]
    assert np.allclose(a.user_positions_m[:, :2].numpy(), zhao_user_track(4, 2, 5))
    with pytest.raises(ValueError, match="slot"):
        make_zhao_dynamic(0, slot=-1)
    with pytest.raises(ValueError, match="slot"):
        make_zhao_dynamic(0, slot=1.5)


def test_dynamic_positions_stay_uniform_over_slots():
    """Reflection keeps the uniform start distribution stationary: slot 40 is uniform again (KS test)."""
    from scipy import stats

    late = np.concatenate([zhao_user_track(s, 2, 40) for s in range(300)])
    assert stats.kstest(late[:, 0], stats.uniform(5, 30).cdf).pvalue > 1e-3
    assert stats.kstest(late[:, 1], stats.uniform(-35, 70).cdf).pvalue > 1e-3


def test_preset_channel_power_follows_path_loss():
    """E|h_l,m|^2 = 1e-3 d_l^-2.67 with d the BS-user distance (004 Sec. IV-A), checked by Monte Carlo."""
    ratios = []
    for seed in range(200):
        inst = make_zhao(seed)
        d = np.linalg.norm(inst.user_positions_m.numpy() - np.array([0.0, -100.0, 20.0]), axis=1)
        alpha = 1e-3 * d ** (-2.67)
        ratios.append((inst.H.abs() ** 2).numpy() / alpha[None, :])
    mean = float(np.mean(ratios))  # 4000 Exp(1) samples: std of the mean ~ 0.016
    assert abs(mean - 1.0) < 0.06


# --- evaluator ----------------------------------------------------------------


def test_evaluator_power_equality_and_sinr_tolerance():
    inst = make_zhao(9)
    sol = BeampatternZF().solve(inst).solution
    m = evaluate(inst, sol)
    assert m["feasible"] and m["power_met"] and m["sinr_met"]
    assert set(m) >= {"beampattern_mse", "min_sinr_db", "sinr_db", "power_w", "feasible", "beta"}
    # Less than P0 is refused (eq. (11c) is an equality), even though SINRs still hold when only S shrinks.
    low = evaluate(inst, {"C": sol["C"], "S": 0.9 * sol["S"]})
    assert low["sinr_met"] and not low["power_met"] and not low["feasible"]
    # SINR just below Gamma0 (beyond SINR_RTOL) is refused.
    worse = dict(sol, C=sol["C"] * math.sqrt(1 - 1e-4))
    assert not evaluate(inst, worse)["sinr_met"]
    # A zero beam gives a finite (floored) SINR in dB, JSON-encodable.
    zero = evaluate(inst, {"C": torch.zeros_like(sol["C"]), "S": sol["S"]})
    json.dumps(zero, allow_nan=False)
    assert not zero["feasible"]


# --- ZF and MRT baselines -------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_zf_feasible_meets_sinr_exactly_with_zero_interference(seed):
    inst = make_zhao(seed)
    res = BeampatternZF().solve(inst)
    assert res.status == Status.CONVERGED and res.feasible
    C, S, H = res.solution["C"], res.solution["S"], inst.H
    hn = H / torch.linalg.vector_norm(H, dim=0)
    cross = (hn.conj().T @ C).abs()
    off = cross - torch.diag(torch.diagonal(cross))
    assert float(off.max()) <= 1e-12 * float(torch.linalg.vector_norm(C))  # no inter-user interference
    assert float((hn.conj().T @ S).abs().max()) <= 1e-12 * float(torch.linalg.vector_norm(S))  # no radar interference
    gamma0 = 10 ** (inst.sinr_db / 10)
    # SINR = p_l |h_l^H u_l|^2 / sigma^2 = Gamma0 exactly, checked with eq. (9) written independently.
    assert_close(_sinr_eq9(H, C, S, inst.noise_w), torch.full((2,), gamma0, dtype=torch.float64), rtol=1e-9)
    assert abs(res.metrics["power_w"] - inst.power_w) <= 1e-12
    assert float(torch.linalg.vector_norm(S)) > 0  # leftover power went to sensing


def test_zf_infeasible_cases():
    res = BeampatternZF().solve(make_zhao(0, sinr_db=80.0))
    assert res.status == Status.INFEASIBLE and not res.feasible and "budget" in res.message
    assert res.metrics["power_met"] and not res.metrics["sinr_met"]
    res = BeampatternZF().solve(make_zhao(0, num_antennas=3, num_users=4))
    assert res.status == Status.INFEASIBLE and "L <= M" in res.message


def test_zf_without_null_space_scales_users_up():
    inst = make_zhao(0, num_antennas=2, num_users=2)
    assert null_space_basis(inst.H).shape == (2, 0)
    res = BeampatternZF().solve(inst)
    assert res.status == Status.CONVERGED and res.feasible
    assert float(res.solution["S"].abs().max()) == 0.0
    assert min(res.metrics["sinr_db"]) > inst.sinr_db


def test_sensing_shape_beats_isotropic_on_fixed_targets():
    inst = make_zhao_fixed_a(0)
    mse = {s: BeampatternZF(sensing_shape=s).solve(inst).metrics["beampattern_mse"] for s in ("window", "isotropic")}
    assert mse["window"] < mse["isotropic"]


def test_mrt_meets_sinr_exactly_or_reports_infeasible():
    inst = make_zhao(2)
    res = BeampatternMRT().solve(inst)
    assert res.status == Status.CONVERGED and res.feasible
    gamma0 = 10 ** (inst.sinr_db / 10)
    assert_close(_sinr_eq9(inst.H, res.solution["C"], res.solution["S"], inst.noise_w),
                 torch.full((2,), gamma0, dtype=torch.float64), rtol=1e-9)
    hard = BeampatternMRT().solve(make_zhao(2, sinr_db=40.0))
    assert hard.status == Status.INFEASIBLE and not hard.feasible


def test_registry_and_result_file_round_trip():
    avail = solvers_for(PROBLEM)
    assert avail["zf"] is BeampatternZF and avail["mrt"] is BeampatternMRT
    solver = get_solver(PROBLEM, "zf", {"sensing_shape": "targets"})
    inst = make_small(5)
    res = solver.solve(inst)
    obj = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    dec = decode_solution(obj, inst)
    assert torch.equal(dec["C"], res.solution["C"]) and torch.equal(dec["S"], res.solution["S"])
    with pytest.raises(Exception, match="sensing_shape"):
        get_solver(PROBLEM, "zf", {"sensing_shape": "bogus"})


def test_fine_grid_mse_is_the_mse_of_the_same_design_on_the_1_degree_grid():
    from isac.metrics.evaluate import evaluate
    from isac.solvers.registry import get_solver
    coarse = make_zhao(4, grid_points=10)
    res = get_solver("beampattern-sinr", "zf").solve(coarse)
    fine = evaluate(coarse.with_params(grid_deg=(-90.0, 90.0, 1.0)), res.solution)
    assert res.metrics["beampattern_mse_fine"] == pytest.approx(fine["beampattern_mse"], rel=1e-12)
    assert res.metrics["beampattern_mse_fine"] != pytest.approx(res.metrics["beampattern_mse"], rel=1e-3)
    same = get_solver("beampattern-sinr", "zf").solve(make_zhao(4))
    assert same.metrics["beampattern_mse_fine"] == same.metrics["beampattern_mse"]
