"""``coop-localization`` (002, Lian et al.): SPEB on the FIM engine, joint-transmission rates,
28 GHz generator, DeepMIMO loader, instance files and evaluator."""

import json
import math

import numpy as np
import pytest
import scipy.io
import torch

from helpers import assert_close, autograd_grad, central_difference_grad, crandn, mutate
from isac.metrics.bounds.lian import (
    angle_jacobian,
    lian_angle_efim,
    lian_fim,
    lian_position_fim,
    lian_speb,
    target_angles,
)
from isac.metrics.evaluate import evaluate
from isac.metrics.problems.coop_localization import evaluate_coop_localization, objective_terms
from isac.scenario import mmwave
from isac.scenario.arrays import lian_upa
from isac.scenario.instances.coop_localization import (
    CoopLocalizationInstance,
    decode_solution,
    lian_preset,
    lian_robust_preset,
    small_preset,
)
from isac.scenario.io import InstanceError
from isac.scenario.problems import get_family
from isac.scenario.random import make_rng

BS3 = torch.tensor(mmwave.LIAN_BS_POSITIONS_M, dtype=torch.float64)
TARGET = torch.tensor(mmwave.LIAN_TARGET_POSITION_M, dtype=torch.float64)
NOISE_W = 1e-3


def _random_setup(seed, n=3, shape=(2, 3), streams=4):
    g = torch.Generator().manual_seed(seed)
    bs = BS3[:n]
    alpha = crandn(g, n, n)
    W = crandn(g, n, shape[0] * shape[1], streams)
    return lian_upa(*shape), bs, alpha, W


# --- an independent implementation of 002's printed formulas (numpy) ----------------------------


def _np_steer(lx, lz, th, be):
    """Eq. (8) and its angle derivatives, element (ix, iz) at index ix*Lz + iz."""
    ix, iz = np.meshgrid(np.arange(lx), np.arange(lz), indexing="ij")
    ix, iz = ix.ravel(), iz.ravel()
    ph = np.pi * (ix * np.cos(be) * np.cos(th) + iz * np.sin(th))
    a = np.exp(1j * ph) / np.sqrt(lx * lz)
    da_t = 1j * np.pi * (-ix * np.cos(be) * np.sin(th) + iz * np.cos(th)) * a
    da_b = 1j * np.pi * (-ix * np.sin(be) * np.cos(th)) * a
    return a, da_t, da_b


def _np_printed_speb(shape, bs, t, alpha, W, sigma2):
    """SPEB from eq. (5)-(6), (16)-(31) as printed (Pi_perp with a pseudo-inverse: A~^H A~ is singular)."""
    n, length = bs.shape[0], shape[0] * shape[1]
    d = t[None, :] - bs
    dist = np.linalg.norm(d, axis=1)
    th = np.arcsin(d[:, 2] / dist)
    be = np.arctan(d[:, 1] / d[:, 0]) + np.pi * (t[0] < bs[:, 0])  # eq. (6) literally
    st = [_np_steer(*shape, th[i], be[i]) for i in range(n)]
    a = [s[0] for s in st]
    col = np.concatenate(a)  # [a_r(1); ..; a_r(N)]
    At = np.concatenate([x.conj() for x in a])[None, :]  # eq. (10), 1 x NL
    A = col[:, None] @ At  # eq. (17)
    B = np.kron(alpha.T, np.ones((length, length)))  # eq. (18) with 1_L -> all-ones L x L blocks
    dB = []
    for m in range(n):
        for k in range(n):
            e = np.zeros((n, n))
            e[k, m] = 1.0  # block (receiver k, transmitter m) carries alpha_{m,k}
            dB.append(np.kron(e, np.ones((length, length))))
    At_ = np.concatenate([A * x for x in dB], axis=1)  # eq. (22)
    proj = np.eye(n * length) - At_ @ np.linalg.pinv(At_.conj().T @ At_) @ At_.conj().T  # eq. (21)
    D = []
    for which in (1, 2):  # theta then beta, eq. (26)-(27)
        for i in range(n):
            dcol = np.concatenate([st[j][which] if j == i else np.zeros(length) for j in range(n)])
            dAt = np.concatenate([st[j][which].conj() if j == i else np.zeros(length) for j in range(n)])[None, :]
            dA = dcol[:, None] @ At + col[:, None] @ dAt
            D.append(dA * B)
    D = np.concatenate(D, axis=1)
    Je = np.zeros((2 * n, 2 * n))
    for s in range(W.shape[1]):
        Pbar = np.kron(np.eye(2 * n), W[:, s:s + 1])  # eq. (24)-(25)
        M = D @ Pbar
        Je += (2 / sigma2) * np.real(M.conj().T @ proj @ M)  # eq. (20)
    dxy = np.hypot(d[:, 0], d[:, 1])
    dq_t = np.stack([-d[:, 0] * d[:, 2] / (dist**2 * dxy), -d[:, 1] * d[:, 2] / (dist**2 * dxy),
                     dxy**2 / (dist**2 * dxy)], 1)  # eq. (30)
    dq_b = np.stack([-d[:, 1] / dxy**2, d[:, 0] / dxy**2, np.zeros(n)], 1)  # eq. (31)
    Q = np.concatenate([dq_t, dq_b])  # eq. (29)
    J = Q.T @ Je @ Q  # eq. (28)
    return np.trace(np.linalg.inv(J)), Je  # eq. (19)


def test_eq20_model_matches_printed_formulas():
    array, bs, alpha, W = _random_setup(0)
    speb_ref, je_ref = _np_printed_speb((2, 3), bs.numpy(), TARGET.numpy(), alpha.numpy(),
                                        W.reshape(-1, W.shape[-1]).numpy(), NOISE_W)
    je = lian_angle_efim(array, bs, TARGET, alpha, W, 1, NOISE_W, model="eq20")
    assert_close(je, torch.as_tensor(je_ref), rtol=1e-9, atol=1e-9 * float(je.abs().max()), what="J_e eq. (20)")
    assert_close(lian_speb(array, bs, TARGET, alpha, W, 1, NOISE_W, model="eq20"),
                 torch.tensor(speb_ref, dtype=torch.float64), rtol=1e-9, what="SPEB eq. (19)")


def test_exact_equals_printed_for_rank_one_transmit_and_dominates_otherwise():
    array, bs, alpha, W = _random_setup(1)
    w1 = W[..., :1]
    exact = lian_speb(array, bs, TARGET, alpha, w1, 7, NOISE_W)
    printed = lian_speb(array, bs, TARGET, alpha, w1, 7, NOISE_W, model="eq20")
    assert_close(exact, printed, rtol=1e-8, what="rank-one R_x")
    # several streams: the exact EFIM carries the transmit-angle information that (20) drops
    j_exact = lian_position_fim(array, bs, TARGET, alpha, W, 7, NOISE_W)
    j_printed = lian_position_fim(array, bs, TARGET, alpha, W, 7, NOISE_W, model="eq20")
    gap = torch.linalg.eigvalsh(j_exact - j_printed)
    assert float(gap.min()) > -1e-9 * float(gap.abs().max())
    assert float(gap.max()) > 1e-3 * float(torch.linalg.eigvalsh(j_printed).max())


def _autograd_position_fim(array, bs, t, alpha, W, snapshots, noise):
    """FIM of (t, Re alpha, Im alpha) from the mean echo u(t, alpha) = G P (eq. (7)) by autograd, Schur on alpha."""
    n, length = bs.shape[0], array.size
    Wf = W.reshape(n * length, -1)

    def mean_echo(eta):
        pos = eta[:3]
        al = torch.complex(eta[3:3 + n * n], eta[3 + n * n:]).reshape(n, n)
        d = pos[None, :] - bs
        th = torch.asin(d[:, 2] / torch.linalg.vector_norm(d, dim=1))
        be = torch.atan2(d[:, 1], d[:, 0])
        a = array.steering(th, be)  # [N, L]
        G = torch.cat([torch.cat([al[m, k] * torch.outer(a[k], a[m].conj()) for m in range(n)], 1)
                       for k in range(n)], 0)
        u = G @ Wf
        return torch.cat([u.real.reshape(-1), u.imag.reshape(-1)])

    eta = torch.cat([t, alpha.real.reshape(-1), alpha.imag.reshape(-1)])
    jac = torch.autograd.functional.jacobian(mean_echo, eta)
    F = (2 * snapshots / noise) * (jac.T @ jac)
    fkk, fkn, fnn = F[:3, :3], F[:3, 3:], F[3:, 3:]
    return fkk - fkn @ torch.linalg.solve(fnn, fkn.T)


def test_position_fim_matches_autograd_through_geometry():
    array, bs, alpha, W = _random_setup(2)
    ours = lian_position_fim(array, bs, TARGET, alpha, W, 5, NOISE_W)
    ref = _autograd_position_fim(array, bs, TARGET, alpha, W, 5, NOISE_W)
    assert_close(ours, ref, rtol=1e-8, atol=1e-10 * float(ref.abs().max()), what="position FIM")


def test_angle_jacobian_matches_autograd():
    t = TARGET.clone()
    jac = torch.autograd.functional.jacobian(lambda p: torch.cat(target_angles(BS3, p)), t)
    assert_close(angle_jacobian(BS3, t), jac, rtol=1e-12, atol=1e-15, what="Q, eq. (29)-(31)")
    # eq. (6) literally (arctan + pi * 1(t_x < b_x)) agrees with atan2 modulo 2 pi
    for tx in (200.0, 240.0, 300.0):
        p = torch.tensor([tx, 420.0, 10.0], dtype=torch.float64)
        d = p - BS3
        lit = torch.atan(d[:, 1] / d[:, 0]) + math.pi * (p[0] < BS3[:, 0]).double()
        diff = torch.remainder(lit - target_angles(BS3, p)[1], 2 * math.pi)
        assert bool(((diff < 1e-12) | (diff > 2 * math.pi - 1e-12)).all())


@pytest.mark.parametrize("model", ["exact", "eq20"])
def test_fim_symmetric_psd(model):
    array, bs, alpha, W = _random_setup(3)
    full = lian_fim(array, bs, TARGET, alpha, W, 3, NOISE_W)
    assert torch.equal(full, full.T)
    ev = torch.linalg.eigvalsh(full)
    assert float(ev.min()) > -1e-10 * float(ev.max())
    J = lian_position_fim(array, bs, TARGET, alpha, W, 3, NOISE_W, model=model)
    assert torch.equal(J, J.T)
    assert float(torch.linalg.eigvalsh(J).min()) > 0


def test_speb_batched_equals_looped_and_scales():
    array, bs, alpha, W = _random_setup(4)
    g = torch.Generator().manual_seed(5)
    Wb = crandn(g, 3, *W.shape)
    tb = TARGET + torch.randn(3, 3, generator=g, dtype=torch.float64)
    batched = lian_speb(array, bs, tb, alpha, Wb, 2, NOISE_W)
    looped = torch.stack([lian_speb(array, bs, tb[i], alpha, Wb[i], 2, NOISE_W) for i in range(3)])
    assert_close(batched, looped, rtol=1e-10, what="batched SPEB")
    # F is proportional to L / sigma^2, so SPEB scales as sigma^2 / L
    s1 = lian_speb(array, bs, TARGET, alpha, W, 2, NOISE_W)
    s2 = lian_speb(array, bs, TARGET, alpha, W, 8, 2 * NOISE_W)
    assert_close(s2, s1 / 2, rtol=1e-9, what="SPEB scaling")


# --- evaluator and joint transmission ------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return small_preset(3)


def _feasible_beams(inst, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = crandn(g, inst.num_bs, inst.num_antennas, inst.num_streams)
    return W / W.norm(dim=(-2, -1), keepdim=True) * (0.9 * inst.p_max_w).sqrt()[:, None, None]


def test_joint_transmission_rates_match_eq3(small):
    W = _feasible_beams(small)
    H, K = small.H.numpy(), small.num_users
    Wn = W.numpy()
    s2 = 10 ** ((small.noise_comm_dbm - 30) / 10)
    expect = []
    for k in range(K):
        # h_k^H p = sum_n h_{k,n}^H p_n, eq. (2); sensing stream interferes, eq. (3)
        g = np.abs(sum(H[n, :, k].conj() @ Wn[n] for n in range(small.num_bs))) ** 2
        expect.append(np.log2(1 + g[k] / (g.sum() - g[k] + s2)))
    m = evaluate(small, {"W": W})
    assert_close(torch.tensor(m["rates_bps_hz"], dtype=torch.float64), torch.tensor(expect), rtol=1e-10, what="rates eq. (4)")
    assert m["objective"] == m["sum_rate_bps_hz"]
    assert_close(torch.tensor(m["power_w"], dtype=torch.float64), (W.abs() ** 2).sum(dim=(1, 2)), rtol=1e-12, what="per-BS power")


def test_feasibility_flags(small):
    W = _feasible_beams(small)
    m = evaluate_coop_localization(small.with_params(speb_max_m2=1e9), {"W": W})
    assert m["feasible"] and m["power_feasible"] and m["speb_feasible"]
    over = W.clone()
    over[1] *= 1.1  # BS 2 alone exceeds its budget (0.9 * 1.21 > 1)
    m = evaluate_coop_localization(small.with_params(speb_max_m2=1e9), {"W": over})
    assert not m["feasible"] and not m["power_feasible"] and m["speb_feasible"]
    m = evaluate_coop_localization(small.with_params(speb_max_m2=0.5 * m["speb_m2"]), {"W": W})
    assert not m["feasible"] and m["power_feasible"] and not m["speb_feasible"]


def test_gradients_wrt_beams_match_central_differences(small):
    W = _feasible_beams(small, 1)
    for key in ("sum_rate_bps_hz", "speb_m2"):
        f = lambda X, key=key: objective_terms(small, X)[key]  # noqa: E731
        ref = central_difference_grad(f, W, h=1e-7)
        assert_close(autograd_grad(f, W), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()), what=key)


def test_common_phase_of_each_beam_changes_nothing(small):
    W = _feasible_beams(small, 2)
    phase = torch.polar(torch.ones(small.num_streams, dtype=torch.float64),
                        torch.linspace(0.3, 2.9, small.num_streams, dtype=torch.float64))
    a, b = objective_terms(small, W), objective_terms(small, W * phase)
    for key in ("rates_bps_hz", "speb_m2", "power_w"):
        assert_close(a[key], b[key], rtol=1e-9, what=key)


def test_objective_batched_equals_looped(small):
    Wb = torch.stack([_feasible_beams(small, s) for s in range(3)])
    t = objective_terms(small, Wb)
    for i in range(3):
        ti = objective_terms(small, Wb[i])
        for key in ("rates_bps_hz", "speb_m2", "power_w"):
            assert_close(t[key][i], ti[key], rtol=1e-10, what=key)


# --- instance files -------------------------------------------------------------------------------


def test_json_round_trip_exact():
    inst = lian_robust_preset(4)
    inst = inst.with_params(W0=_feasible_beams(inst), spacing_wavelengths=0.4, speb_model="eq20")
    back = CoopLocalizationInstance.from_dict(json.loads(json.dumps(inst.to_dict())))
    for name in ("bs_positions_m", "target_position_m", "H", "alpha", "user_positions_m", "H_estimate",
                 "target_position_estimate_m", "W0"):
        assert torch.equal(getattr(inst, name), getattr(back, name)), name
    for name in ("upa_shape", "p_max_dbm", "noise_comm_dbm", "noise_sense_dbm", "speb_max_m2", "snapshots",
                 "carrier_hz", "bandwidth_hz", "num_sensing_streams", "spacing_wavelengths", "speb_model"):
        assert getattr(inst, name) == getattr(back, name), name
    assert back.to_dict() == inst.to_dict()


def test_presets_deterministic_and_registered():
    a, b = small_preset(7), small_preset(7)
    assert torch.equal(a.H, b.H) and torch.equal(a.alpha, b.alpha) and a.speb_max_m2 == b.speb_max_m2
    assert not torch.equal(a.H, small_preset(8).H)
    fam = get_family("coop-localization")
    assert set(fam.presets) >= {"lian", "small"}
    inst = lian_preset(0)
    assert (inst.num_bs, inst.num_antennas, inst.num_users, inst.num_streams) == (3, 16, 5, 6)
    assert inst.H_estimate is None and lian_robust_preset(0).H_estimate is not None


_mutate = mutate


@pytest.mark.parametrize(
    "path, value, key",
    [
        (("bogus",), 1, "bogus"),
        (("params", "extra"), 1, "params.extra"),
        (("params", "speb_max_m2"), KeyError, "params.speb_max_m2"),
        (("params", "speb_max_m2"), -1.0, "params.speb_max_m2"),
        (("params", "snapshots"), 0, "params.snapshots"),
        (("params", "bandwidth_hz"), -5.0, "params.bandwidth_hz"),
        (("params", "p_max_dbm"), [20.0], "params.p_max_dbm"),
        (("params", "p_max_dbm"), [20.0, float("nan")], "params.p_max_dbm"),
        (("params", "speb_model"), "fancy", "params.speb_model"),
        (("bs_positions_m",), [[0.0, 0.0, 0.0]], "bs_positions_m"),
        (("target_position_m",), [236.0, 390.0, 30.0], "target_position_m"),
        (("H", "re"), [[[0.0]]], "H"),
        (("alpha", "im"), [[float("nan"), 0.0], [0.0, 0.0]], "alpha"),
    ],
)
def test_bad_instances_name_the_key(small, path, value, key):
    obj = _mutate(small.to_dict(), path, value)
    with pytest.raises(InstanceError) as e:
        CoopLocalizationInstance.from_dict(obj)
    msg = str(e.value)
    assert msg.startswith(key) and "\n" not in msg


def test_bad_solution_names_the_key(small):
    with pytest.raises(InstanceError, match="^W: expected shape"):
        decode_solution({"W": {"re": [[0.0]], "im": [[0.0]]}}, small)
    with pytest.raises(InstanceError, match="^junk: unknown key"):
        decode_solution({"W": {"re": [], "im": []}, "junk": 1}, small)


# --- 28 GHz generator, errors, DeepMIMO ---------------------------------------------------------


def test_geometric_los_channel_closed_form():
    array = lian_upa(4, 4)
    users = torch.tensor([[250.0, 420.0, 2.0], [280.0, 470.0, 2.0]], dtype=torch.float64)
    H = mmwave.geometric_channels(make_rng(0), array, BS3, users, num_clusters=0)
    d = torch.linalg.vector_norm(users[None] - BS3[:, None], dim=-1)  # [N, K]
    pl_db = 32.4 + 21 * torch.log10(d) + 20 * math.log10(28.0)
    assert_close((H.abs() ** 2).sum(1), array.size * 10 ** (-pl_db / 10), rtol=1e-10, what="LoS power")
    # the LoS channel points at the user: matched filter gain L |g|^2 at the user's own angles
    th, be = target_angles(BS3[:1], users[0])  # BS 1 only -> [1]
    a = array.steering(th, be)[0]
    assert_close(torch.abs(a.conj() @ H[0, :, 0]) ** 2, (H[0, :, 0].abs() ** 2).sum(), rtol=1e-10, what="LoS dir")
    assert float((mmwave.geometric_channels(make_rng(0), array, BS3, users).abs() ** 2).sum()) > 0


def test_sensing_gains_radar_equation():
    alpha = mmwave.sensing_gains(make_rng(0), BS3, TARGET, 16, rcs_m2=3.0)
    d = torch.linalg.vector_norm(TARGET - BS3, dim=-1)
    lam = 299_792_458.0 / 28e9
    expect = 16**2 * lam**2 * 3.0 / ((4 * math.pi) ** 3 * d[:, None] ** 2 * d[None, :] ** 2)
    assert_close(alpha.abs() ** 2, expect, rtol=1e-12, what="|alpha|^2")
    assert_close(alpha, alpha.T, rtol=1e-12, what="reciprocity")


def test_estimation_errors():
    rng = make_rng(1)
    H = mmwave.geometric_channels(rng, lian_upa(4, 4), BS3, mmwave.drop_users(rng, 40))
    Hh = mmwave.csi_estimate(rng, H, snr_db=10.0)
    nmse = ((Hh - H).abs() ** 2).sum(1) / (H.abs() ** 2).sum(1)  # [N, K], each ~ chi2(32)/32 / 10
    assert abs(float(nmse.mean()) - 0.1) < 0.01
    t_hat = mmwave.estimated_target_position(rng, TARGET.expand(200, 3), error_range_m=(2.0, 3.0))
    err = (t_hat - TARGET).abs()
    assert float(err.min()) >= 2.0 and float(err.max()) < 3.0
    assert float((t_hat - TARGET).mean()) == pytest.approx(0.0, abs=0.2)  # random signs
    g = mmwave.estimated_target_position(rng, TARGET.expand(4000, 3), std_m=2.0) - TARGET
    assert float(g.std()) == pytest.approx(2.0, rel=0.05)


def test_load_deepmimo_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    n, u, length, s = 3, 6, 16, 2
    ch = rng.standard_normal((n, u, 1, length, s)) + 1j * rng.standard_normal((n, u, 1, length, s))
    uloc = rng.uniform(0, 500, (u, 3))
    f = tmp_path / "o1.mat"
    scipy.io.savemat(f, {"channel": ch, "user_location": uloc, "bs_location": np.array(mmwave.LIAN_BS_POSITIONS_M)})
    out = mmwave.load_deepmimo(f, users=[4, 1], subcarrier=1)
    assert out.H.shape == (n, length, 2) and out.H.dtype == torch.complex128
    assert torch.equal(out.H[:, :, 0], torch.as_tensor(np.conj(ch[:, 4, 0, :, 1])))
    assert torch.equal(out.user_positions_m, torch.as_tensor(uloc[[4, 1]]))
    assert torch.equal(out.bs_positions_m, BS3)
    with pytest.raises(InstanceError, match="no such file"):
        mmwave.load_deepmimo(tmp_path / "missing.mat")
    bad = tmp_path / "bad.mat"
    bad.write_text("not a mat file")
    with pytest.raises(InstanceError, match="not a readable MATLAB v5"):
        mmwave.load_deepmimo(bad)
    wrong = tmp_path / "wrong.mat"
    scipy.io.savemat(wrong, {"channel": np.zeros((2, 3, 4, 5))})
    with pytest.raises(InstanceError, match="^channel: expected"):
        mmwave.load_deepmimo(wrong)
