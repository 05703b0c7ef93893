"""``multibs-association`` (000, Li et al.): DoA CRB, radar SNR/P_D, network rates, instances, evaluator.

Every expected value is recomputed here from the paper's printed formulas (numpy, independent of
the library code) or from textbook closed forms; nothing is a stored output of the code under test.
"""

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from helpers import assert_close, autograd_grad, central_difference_grad, crandn, mutate
from isac.metrics.bounds.li import li_derivatives, li_doa_crb, li_fim
from isac.metrics.fim import fisher_information
from isac.metrics.network import association_checks, sinr_matrix, sum_rate_bps_hz, user_rates_bps_hz
from isac.metrics.problems.multibs_association import evaluate_multibs_association, metric_terms
from isac.metrics.radar import detection_probability, radar_snr
from isac.scenario.arrays import li_ula
from isac.scenario.instances.multibs_association import (
    FAMILY, MultibsAssociationInstance, decode_solution, encode_solution, li_preset, small_preset,
)
from isac.scenario.io import InstanceError

# --- independent numpy implementation of 000's formulas ---------------------------------------------


def np_steer(M, phi, d=0.5):
    """000 eq. (5): a = exp(j 2 pi d m cos phi), and its derivative in phi."""
    m = np.arange(M)
    a = np.exp(1j * 2 * np.pi * d * m * np.cos(phi))
    return a, 1j * 2 * np.pi * d * m * (-np.sin(phi)) * a


def paper_crb(phi, alpha, rho, W, L, s2):
    """000 eq. (22) with the blocks (64)-(66), G = g g^H, g = rho^(1/4) a / sqrt(M)."""
    M = W.shape[0]
    a, ad = np_steer(M, phi)
    g = rho**0.25 * a / np.sqrt(M)
    G = np.outer(g, g.conj())
    Gd = rho**0.5 / M * (np.outer(ad, a.conj()) + np.outer(a, ad.conj()))
    R = W @ W.conj().T
    j_pp = (2 * L * abs(alpha) ** 2 / s2 * np.trace(Gd.conj().T @ Gd @ R)).real
    j_pa = np.real(2 * L * np.conj(alpha) / s2 * np.trace(Gd.conj().T @ G @ R) * np.array([1, 1j]))
    j_aa = (2 * L / s2 * np.trace(G.conj().T @ G @ R)).real * np.eye(2)
    return 1.0 / (j_pp - j_pa @ np.linalg.solve(j_aa, j_pa))


def paper_snr(phi, rho, W, sigma_t2, s2):
    """000 eq. (18) as printed: sigma_t^2 |beta|^2 ||g^H W||^2 / sigma_r^2, beta = rho^(1/4)."""
    M = W.shape[0]
    beta = rho**0.25
    g = beta * np_steer(M, phi)[0] / np.sqrt(M)
    return sigma_t2 * beta**2 * np.sum(np.abs(g.conj() @ W) ** 2) / s2


def paper_rates(H, W, U, s2):
    """000 eqs. (8), (24)-(25), one user at a time, bit/s/Hz with B = 1."""
    K, _, N = H.shape
    R = np.zeros(N)
    for i in range(N):
        for k in range(K):
            if U[k, i] == 0:
                continue
            h = H[k][:, i]
            p = np.abs(h.conj() @ W[k]) ** 2
            gamma = p[i] / (p.sum() - p[i] + s2)
            R[i] += np.log2(1 + gamma) / U[k].sum()
    return R


def np_(t):
    return t.detach().numpy()


@pytest.fixture(scope="module")
def inst():
    return small_preset(3)


def random_solution(inst, gen, batch=()):
    K, M, N = inst.H.shape
    W = crandn(gen, *batch, K, M, inst.num_streams)
    W = W * (inst.p_max_w.sqrt()[:, None, None] / W.abs().pow(2).sum((-2, -1), keepdim=True).sqrt())
    A = torch.zeros(K, N, dtype=torch.float64)
    A[torch.arange(N) % K, torch.arange(N)] = 1.0
    return W, A


# --- DoA CRB (bounds/li.py) ----------------------------------------------------------------------


def test_crb_equals_paper_closed_form_batched():
    gen = torch.Generator().manual_seed(1)
    M, S, L, s2 = 6, 4, 32, 1e-3
    phi = torch.tensor([0.7, 1.3, 2.4], dtype=torch.float64)
    alpha = crandn(gen, 3)
    rho = torch.tensor([0.5, 2.0, 1.3], dtype=torch.float64)
    W = crandn(gen, 5, 3, M, S)  # batch of 5 x 3 BSs
    crb = li_doa_crb(li_ula(M), phi, alpha, rho, W, L, s2)
    assert crb.shape == (5, 3)
    for b in range(5):
        for k in range(3):
            ref = paper_crb(float(phi[k]), complex(alpha[k]), float(rho[k]), np_(W[b, k]), L, s2)
            assert_close(crb[b, k], torch.tensor(ref, dtype=torch.float64), rtol=1e-9, what=f"CRB[{b},{k}]")


def test_crb_isotropic_textbook():
    r"""Colocated MIMO radar, monostatic ULA, R = (P/M) I.

    With G = c a a^H (c = alpha sqrt(rho)/M), a_m = e^{j k m cos phi}, k = 2 pi d, the derivative
    a' = j k u' D a (u' = -sin phi, D = diag(m)), so a^H a' = j k u' S1 is imaginary and
    tr(A R A'^H) = (P/M) M 2 Re(a^H a') = 0: the gain decouples and
    CRB = sigma^2 / (2 L |c|^2 (P/M) ||a' a^H + a a'^H||_F^2), with
    ||a' a^H + a a'^H||_F^2 = 2 k^2 u'^2 (M S2 - S1^2) = k^2 u'^2 M^2 (M^2 - 1) / 6. Hence
    CRB = 3 sigma^2 / (L |c|^2 P M (M^2 - 1) k^2 sin^2 phi).
    """
    M, L, s2, P = 8, 100, 0.3, 2.0
    for phi, alpha, rho in ((0.4, 0.7 - 0.2j, 1.0), (1.9, 1.5j, 0.25)):
        W = math.sqrt(P / M) * torch.eye(M, dtype=torch.complex128)
        crb = li_doa_crb(li_ula(M), phi, alpha, rho, W, L, s2)
        c2 = abs(alpha) ** 2 * rho / M**2
        ref = 3 * s2 / (L * c2 * P * M * (M**2 - 1) * (2 * math.pi * 0.5) ** 2 * math.sin(phi) ** 2)
        assert_close(crb, torch.tensor(ref, dtype=torch.float64), rtol=1e-10, what="isotropic CRB")


def test_fim_against_autograd_derivatives_of_G():
    """Dense dG/d[phi, Re a, Im a] from autograd of the response alpha G(phi) (not the analytic a')."""
    gen = torch.Generator().manual_seed(2)
    M, S = 5, 3
    arr = li_ula(M)
    phi0, alpha0, rho = 1.1, 0.4 + 0.9j, 0.8
    W = crandn(gen, M, S)

    def response(xi):
        a = arr.steering(xi[0])
        return (xi[1] + 1j * xi[2]) * math.sqrt(rho) / M * torch.outer(a, a.conj())

    xi = torch.tensor([phi0, alpha0.real, alpha0.imag], dtype=torch.float64)
    jr = torch.autograd.functional.jacobian(lambda x: response(x).real, xi)
    ji = torch.autograd.functional.jacobian(lambda x: response(x).imag, xi)
    dense = torch.complex(jr, ji).permute(2, 0, 1)  # [3, M, M]
    f_ref = fisher_information(dense, beams=W, snapshots=7, noise_power_w=0.2)
    f = li_fim(arr, phi0, alpha0, rho, W, 7, 0.2)
    assert_close(f, f_ref, rtol=1e-10, what="FIM vs autograd-derivative FIM")
    assert_close(li_derivatives(arr, phi0, alpha0, rho).dense(), dense, rtol=1e-10, atol=1e-14, what="dG")


def test_fim_symmetric_psd_and_crb_at_least_inverse_of_fim_diag():
    gen = torch.Generator().manual_seed(3)
    W = crandn(gen, 4, 6, 5)
    f = li_fim(li_ula(6), torch.tensor([0.3, 1.0, 2.0, 2.9], dtype=torch.float64), crandn(gen, 4), torch.ones(4, dtype=torch.float64), W, 10, 1.0)
    assert torch.equal(f, f.transpose(-2, -1))
    assert bool((torch.linalg.eigvalsh(f) > -1e-10 * f.abs().amax((-2, -1), keepdim=True)).all())
    crb = li_doa_crb(li_ula(6), torch.tensor([0.3, 1.0, 2.0, 2.9], dtype=torch.float64), crandn(gen, 4), torch.ones(4, dtype=torch.float64), W, 10, 1.0)
    assert bool(torch.isfinite(crb).all()) and bool((crb > 0).all())


def test_crb_zero_beams_is_inf():
    W = torch.zeros(2, 4, 3, dtype=torch.complex128)
    W[1, 0, 0] = 1.0
    crb = li_doa_crb(li_ula(4), torch.tensor([1.0, 1.0], dtype=torch.float64), torch.ones(2, dtype=torch.complex128), torch.ones(2, dtype=torch.float64), W, 4, 1.0)
    assert math.isinf(float(crb[0])) and math.isfinite(float(crb[1]))


# --- radar SNR and detection probability ---------------------------------------------------------


def test_radar_snr_matches_printed_eq18():
    gen = torch.Generator().manual_seed(4)
    M = 7
    W = crandn(gen, 3, M, 9)
    phi = torch.tensor([0.2, 1.6, 2.8], dtype=torch.float64)
    rho = torch.tensor([1e-3, 2.0, 0.5], dtype=torch.float64)
    snr = radar_snr(li_ula(M).steering(phi), W, echo_power_gain=rho, rcs_variance=0.7, noise_power_w=0.01)
    for k in range(3):
        ref = paper_snr(float(phi[k]), float(rho[k]), np_(W[k]), 0.7, 0.01)
        assert_close(snr[k], torch.tensor(ref, dtype=torch.float64), rtol=1e-11, what="radar SNR")


def test_detection_probability_matches_chi2_form_eq17():
    p_fa = 1e-3
    snr = torch.tensor([0.0, 0.5, 3.0, 20.0], dtype=torch.float64)
    pd = detection_probability(snr, p_fa)
    # eq. (14)-(17) with mu_1 / mu_0 = 1 + SNR, via scipy's chi-square(2) CDF and inverse.
    ref = 1 - chi2.cdf(chi2.ppf(1 - p_fa, 2) / (1 + snr.numpy()), 2)
    assert_close(pd, torch.tensor(ref, dtype=torch.float64), rtol=1e-10, what="P_D")
    assert abs(float(pd[0]) - p_fa) < 1e-15  # no target echo -> P_D = P_FA
    with pytest.raises(ValueError):
        detection_probability(snr, 1.0)


# --- network rates ------------------------------------------------------------------------------


def test_rates_match_eq25_and_bands_are_orthogonal(inst):
    gen = torch.Generator().manual_seed(5)
    W, A = random_solution(inst, gen)
    A = torch.tensor([[1, 1, 0, 1], [0, 0, 1, 0]], dtype=torch.float64)
    rates = user_rates_bps_hz(inst.H, W, A, inst.noise_comm_w)
    ref = paper_rates(np_(inst.H), np_(W), A.numpy(), inst.noise_comm_w)
    assert_close(rates, torch.tensor(ref, dtype=torch.float64), rtol=1e-11, what="rates")
    # Orthogonal bands: changing BS 1's beams leaves the rates of BS 0's users unchanged.
    W2 = W.clone()
    W2[1] = 3.0 * crandn(gen, *W[1].shape)
    rates2 = user_rates_bps_hz(inst.H, W2, A, inst.noise_comm_w)
    assert torch.equal(rates2[A[0] == 1], rates[A[0] == 1])
    assert not torch.equal(rates2[A[1] == 1], rates[A[1] == 1])
    # bandwidth scales every rate
    assert_close(sum_rate_bps_hz(inst.H, W, A, inst.noise_comm_w, bandwidth=5e6), 5e6 * rates.sum(), rtol=1e-12)


def test_sinr_matrix_shape_and_association_checks(inst):
    gen = torch.Generator().manual_seed(6)
    W, _ = random_solution(inst, gen, batch=(3,))
    assert sinr_matrix(inst.H, W, inst.noise_comm_w).shape == (3, inst.num_bs, inst.num_users)
    ok = association_checks(torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]]))
    assert bool(ok["valid"])
    two = association_checks(torch.tensor([[1, 1, 1, 0], [0, 1, 0, 1]]))
    assert not bool(two["one_bs_per_user"]) and not bool(two["valid"])
    idle = association_checks(torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]))
    assert bool(idle["one_bs_per_user"]) and not bool(idle["every_bs_serves"])


# --- gradients, invariances, batching -------------------------------------------------------------


@pytest.mark.parametrize("metric", ["sum_rate_bps_hz", "radar_snr", "crb_rad2"])
def test_gradients_vs_central_differences(inst, metric):
    gen = torch.Generator().manual_seed(7)
    W, A = random_solution(inst, gen)
    weights = torch.tensor([1.0, 0.37], dtype=torch.float64)

    def f(Wx):
        v = metric_terms(inst, Wx, A)[metric]
        return v if v.ndim == 0 else (weights * v).sum()

    scale = float(f(W).abs())
    g_fd = central_difference_grad(f, W, h=1e-6)
    g_ad = autograd_grad(f, W)
    assert_close(g_ad, g_fd, rtol=1e-5, atol=1e-7 * scale, what=f"grad {metric}")


def test_invariant_to_phase_of_each_beam(inst):
    gen = torch.Generator().manual_seed(8)
    W, A = random_solution(inst, gen)
    phases = torch.exp(1j * 2 * math.pi * torch.rand(W.shape[0], 1, W.shape[-1], generator=gen, dtype=torch.float64))
    t0, t1 = metric_terms(inst, W, A), metric_terms(inst, W * phases, A)
    for key in ("rates_bps_hz", "radar_snr", "crb_rad2", "power_w"):
        assert_close(t1[key], t0[key], rtol=1e-10, what=key)


def test_batched_equals_looped(inst):
    gen = torch.Generator().manual_seed(9)
    W, A = random_solution(inst, gen, batch=(4,))
    tb = metric_terms(inst, W, A)
    for b in range(4):
        tl = metric_terms(inst, W[b], A)
        for key in ("sinr", "rates_bps_hz", "sum_rate_bps_hz", "radar_snr", "crb_rad2", "power_w"):
            assert_close(tb[key][b], tl[key], rtol=1e-12, what=key)


# --- instances ----------------------------------------------------------------------------------


def test_li_preset_matches_table2():
    ins = li_preset(0)
    assert ins.H.shape == (3, 24, 10) and ins.num_sensing_streams == 24 and ins.snapshots == 1024
    assert ins.p_max_dbm == (32.0,) * 3 and ins.crb_max_rad2 == 0.01 and ins.snr_min_db == 7.0
    pos = ins.positions
    d_bs = torch.cdist(pos["bs_m"], pos["bs_m"]) + 1e9 * torch.eye(3)
    assert float(d_bs.min()) >= 80.0 and float(d_bs.min(1).values.max()) <= 160.0
    for key, gain, ang in (("detection_targets_m", ins.det_echo_power_gain, ins.det_angle_rad),
                           ("estimation_targets_m", ins.est_echo_power_gain, ins.est_angle_rad)):
        d = (pos[key] - pos["bs_m"]).norm(dim=-1)
        assert bool(((d >= 100) & (d <= 160)).all())
        assert_close(gain, 1e-3 * d**-3.5, rtol=1e-12, what="echo gain")
        v = pos[key] - pos["bs_m"]
        assert_close(torch.cos(ang), v[:, 0] / d, rtol=1e-12, what="angle from ULA axis")
    # Rician channel power: E||h||^2 = gain * (kappa/(kappa+1) + M/(kappa+1)); check the mean loosely
    assert ins.H.dtype == torch.complex128
    assert torch.equal(li_preset(0).H, ins.H) and not torch.equal(li_preset(1).H, ins.H)


@pytest.mark.parametrize("preset", ["li", "small"])
def test_json_round_trip_exact(preset):
    ins = FAMILY.presets[preset](11)
    gen = torch.Generator().manual_seed(10)
    ins = ins.with_params(W0=crandn(gen, ins.num_bs, ins.num_antennas, ins.num_streams), bandwidth_hz=2e7)
    back = MultibsAssociationInstance.from_dict(json.loads(json.dumps(ins.to_dict())))
    for name in ("H", "det_angle_rad", "det_echo_power_gain", "est_angle_rad", "est_echo_power_gain", "est_rcs", "W0"):
        assert torch.equal(getattr(back, name), getattr(ins, name)), name
    for name in ins.positions:
        assert torch.equal(back.positions[name], ins.positions[name])
    assert back.to_dict() == ins.to_dict()
    W, A = random_solution(ins, gen)
    sol = decode_solution(json.loads(json.dumps(encode_solution({"W": W, "association": A}))), back)
    assert torch.equal(sol["W"], W) and torch.equal(sol["association"], A)


def test_scalar_p_max_dbm_is_per_bs(inst):
    d = inst.to_dict()
    d["params"]["p_max_dbm"] = 20.0
    assert MultibsAssociationInstance.from_dict(d).p_max_dbm == (20.0, 20.0)


_mutate = mutate


@pytest.mark.parametrize(
    "path, value, key",
    [
        (("params", "colour"), 1, "params.colour"),
        (("extra",), 1, "extra"),
        (("params", "snapshots"), KeyError, "params.snapshots"),
        (("params", "rcs_variance"), -1.0, "params.rcs_variance"),
        (("params", "crb_max_rad2"), 0.0, "params.crb_max_rad2"),
        (("params", "noise_comm_dbm"), float("nan"), "params.noise_comm_dbm"),
        (("params", "p_max_dbm"), [30.0], "params.p_max_dbm"),
        (("params", "false_alarm_probability"), 1.5, "params.false_alarm_probability"),
        (("params", "num_antennas"), 5, "H"),
        (("detection_targets", "echo_power_gain"), [1.0, -1.0], "detection_targets.echo_power_gain"),
        (("detection_targets", "angle_rad"), [1.0], "detection_targets.angle_rad"),
        (("estimation_targets", "rcs"), {"re": [0.0, 1.0], "im": [0.0, 0.0]}, "estimation_targets.rcs"),
        (("estimation_targets", "angle_rad"), [1.0, float("inf")], "estimation_targets.angle_rad"),
    ],
)
def test_bad_instance_names_the_key(inst, path, value, key):
    d = _mutate(inst.to_dict(), path, value)
    with pytest.raises(InstanceError) as e:
        MultibsAssociationInstance.from_dict(json.loads(json.dumps(d, allow_nan=True)))
    msg = str(e.value)
    assert msg.startswith(key) and "\n" not in msg


def test_bad_solution_names_the_key(inst):
    gen = torch.Generator().manual_seed(12)
    W, A = random_solution(inst, gen)
    good = encode_solution({"W": W, "association": A})
    bad_a = copy.deepcopy(good)
    bad_a["association"][0][0] = 0.5
    bad_w = copy.deepcopy(good)
    bad_w["W"]["re"] = bad_w["W"]["re"][:1]
    bad_w["W"]["im"] = bad_w["W"]["im"][:1]
    for obj, key in ((bad_a, "association"), (bad_w, "W"), ({**good, "beams": 1}, "beams"),
                     ({"W": good["W"]}, "association")):
        with pytest.raises(InstanceError, match=f"^{key}"):
            decode_solution(obj, inst)


# --- evaluator: hand-built feasible and infeasible solutions ------------------------------------


def hand_built(inst):
    """Per BS: one radar stream on the detection target with twice the power eq. (18) needs,
    one on the estimation target with 0.2 W, MRT on the served users with what is left."""
    K, M, N = inst.H.shape
    A = torch.zeros(K, N, dtype=torch.float64)
    A[torch.arange(N) % K, torch.arange(N)] = 1.0
    W = torch.zeros(K, M, inst.num_streams, dtype=torch.complex128)
    s2 = inst.noise_radar_w
    for k in range(K):
        p_max = float(inst.p_max_w[k])
        a_det = torch.tensor(np_steer(M, float(inst.det_angle_rad[k]))[0])
        a_est = torch.tensor(np_steer(M, float(inst.est_angle_rad[k]))[0])
        # w = sqrt(p) a / sqrt(M) gives ||a^H w||^2 = p M, so SNR = sigma_t^2 rho p / sigma_r^2.
        p_det = 2 * 10 ** (inst.snr_min_db / 10) * s2 / (inst.rcs_variance * float(inst.det_echo_power_gain[k]))
        assert p_det < 0.5 * p_max, "test setup: detection needs too much power"
        W[k, :, N] = math.sqrt(p_det) * a_det / math.sqrt(M)
        W[k, :, N + 1] = math.sqrt(0.2) * a_est / math.sqrt(M)
        served = torch.nonzero(A[k]).flatten()
        p_user = (0.95 * p_max - p_det - 0.2) / len(served)
        for i in served:
            h = inst.H[k][:, i]
            W[k, :, i] = math.sqrt(p_user) * h / h.norm()
    return W, A


def first_principles(inst, W, A):
    """Feasibility of (27a)-(27f) from the numpy formulas above."""
    K = inst.num_bs
    Wn, An = np_(W), A.numpy()
    ok = bool(((An == 0) | (An == 1)).all() and (An.sum(0) == 1).all() and (An.sum(1) >= 1).all())
    for k in range(K):
        ok &= float(np.sum(np.abs(Wn[k]) ** 2)) <= float(inst.p_max_w[k]) * (1 + 1e-6)
        snr = paper_snr(float(inst.det_angle_rad[k]), float(inst.det_echo_power_gain[k]), Wn[k],
                        inst.rcs_variance, inst.noise_radar_w)
        ok &= snr >= 10 ** (inst.snr_min_db / 10) * (1 - 1e-6)
        crb = paper_crb(float(inst.est_angle_rad[k]), complex(inst.est_rcs[k]), float(inst.est_echo_power_gain[k]),
                        Wn[k], inst.snapshots, inst.noise_radar_w)
        ok &= crb <= inst.crb_max_rad2 * (1 + 1e-6)
    return bool(ok)


def test_evaluator_feasible_and_infeasible(inst):
    W, A = hand_built(inst)
    out = evaluate_multibs_association(inst, {"W": W, "association": A})
    assert first_principles(inst, W, A) is True
    assert out["feasible"] is True and out["association_valid"] is True
    ref = paper_rates(np_(inst.H), np_(W), A.numpy(), inst.noise_comm_w)
    assert abs(out["sum_rate_bps_hz"] - ref.sum()) <= 1e-10 * ref.sum()
    assert len(out["radar_snr_db"]) == inst.num_bs and len(out["crb_rad2"]) == inst.num_bs
    assert json.loads(json.dumps(out)) == out  # plain JSON types

    cases = {}
    cases["over power"] = (inst, W * math.sqrt(1.0 / 0.95 * 1.001), A, "power_ok")
    no_det = W.clone()
    a0 = torch.tensor(np_steer(inst.num_antennas, float(inst.det_angle_rad[0]))[0])
    no_det[0] = no_det[0] - torch.outer(a0, a0.conj() @ no_det[0]) / inst.num_antennas  # null towards target
    cases["no detection beam"] = (inst, no_det, A, "radar_snr_ok")
    # eps just below BS 1's CRB (computed by the numpy reference, not by the code under test)
    crb1 = paper_crb(float(inst.est_angle_rad[1]), complex(inst.est_rcs[1]), float(inst.est_echo_power_gain[1]),
                     np_(W[1]), inst.snapshots, inst.noise_radar_w)
    cases["tight CRB"] = (inst.with_params(crb_max_rad2=0.99 * crb1), W, A, "crb_ok")
    twice = A.clone()
    twice[:, 0] = 1
    cases["user on two BSs"] = (inst, W, twice, None)
    idle = torch.zeros_like(A)
    idle[0] = 1
    cases["idle BS"] = (inst, W, idle, None)
    for name, (ins, Wc, Ac, flag) in cases.items():
        expected = first_principles(ins, Wc, Ac)
        out = evaluate_multibs_association(ins, {"W": Wc, "association": Ac})
        assert expected is False, name
        assert out["feasible"] is False, name
        if flag is None:
            assert out["association_valid"] is False, name
        else:
            assert not all(out[flag]), name
