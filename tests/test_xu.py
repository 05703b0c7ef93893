"""``bs-selection`` (001, Xu et al.): location CRLB of Prop. 1, instance files, evaluator.

Independent checks: the paper's printed Prop. 1 formulas (33)-(39) in numpy (with the
delay term), a brute-force FIM by autograd of G(p, alpha) through the geometry, and
eq. (5) written out directly.
"""

import copy
import json
import math

import numpy as np
import pytest
import torch

from helpers import assert_close, autograd_grad, central_difference_grad, crandn
from isac.metrics.bounds.xu import (
    angle_jacobian,
    bs_angles,
    xu_crlb,
    xu_fim,
    xu_position_crb,
    xu_position_fim,
)
from isac.metrics.evaluate import evaluate
from isac.metrics.problems import bs_selection as ev
from isac.scenario.arrays import xu_ula
from isac.scenario.geometry import angle_from_broadside
from isac.scenario.instances import bs_selection as bs
from isac.scenario.io import InstanceError

L, SIGMA2 = 64, 1e-3


def _geometry(S=4):
    q = torch.tensor([[0.0, 100.0], [100.0, 0.0], [0.0, -100.0], [-100.0, 0.0], [70.0, 70.0]][:S],
                     dtype=torch.float64)
    axes = torch.tensor([[1.0, 0.2], [0.3, 1.0], [1.0, 0.0], [-0.1, 2.0], [1.0, -1.0]][:S], dtype=torch.float64)
    p = torch.tensor([30.0, 45.0], dtype=torch.float64)
    return q, axes, p


def _random_cov(gen, S, N, M=3):
    B = crandn(gen, S, N, M)
    return B, B @ B.conj().transpose(-2, -1)


def _gains(gen, S):
    g = crandn(gen, S, S) * 0.3
    return g * (1 - torch.eye(S, dtype=torch.float64))


# --- independent implementation of 001's printed Prop. 1 (numpy) ----------------------------


def paper_crlb(q, axes, p, alpha, C, receiver, N, tau_scale=0.0, snapshots=L, noise_w=SIGMA2):
    """tr((F_pp - F_pa F_aa^-1 F_pa^T)^-1) from eq. (33)-(39), derivatives w.r.t. p directly.

    Includes the delay term G~ = G' - tau' G of eq. (32) with tau = tau_scale * (d_t + d_r).
    """
    q, axes, p, alpha, C = (np.asarray(x) for x in (q, axes, p, alpha, C))
    n = np.arange(N)
    u = axes / np.linalg.norm(axes, axis=-1, keepdims=True)

    def steer(b):
        d = p - q[b]
        r = np.linalg.norm(d)
        s = u[b] @ d / r
        th = np.arcsin(s)
        dth = (u[b] - s * d / r) / (r * np.cos(th))  # gradient of asin(u.d/|d|) w.r.t. p
        a = np.exp(-1j * np.pi * n * np.sin(th))
        da = -1j * np.pi * n * np.cos(th) * a
        dr = d / r
        return a, [da * dth[i] for i in range(2)], dr

    s = receiver
    tx = [t for t in range(len(q)) if t != s]
    b, db, dr_s = steer(s)
    Fpp = np.zeros((2, 2))
    D = np.zeros((2, len(tx)), dtype=complex)
    E = np.zeros(len(tx))
    for m, t in enumerate(tx):
        a, da, dr_t = steer(t)
        G = np.outer(b, a.conj())
        tau_dot = tau_scale * (dr_s + dr_t)
        Gt = [np.outer(db[i], a.conj()) + np.outer(b, da[i].conj()) - tau_dot[i] * G for i in range(2)]
        for i in range(2):
            for j in range(2):
                Fpp[i, j] += np.real(np.trace(abs(alpha[s, t]) ** 2 * Gt[j] @ C[t] @ Gt[i].conj().T))
            D[i, m] = np.conj(alpha[s, t]) * np.trace(G @ C[t] @ Gt[i].conj().T)
        E[m] = np.real(np.trace(G @ C[t] @ G.conj().T))
    c = 2 * snapshots / noise_w
    Fpp, Fpa = c * Fpp, c * np.real(np.concatenate([D, 1j * D], axis=1))
    Faa = c * np.kron(np.eye(2), np.diag(E))
    J = Fpp - Fpa @ np.linalg.solve(Faa, Fpa.T)
    return float(np.trace(np.linalg.inv(J))), J


@pytest.mark.parametrize("receiver", [0, 1, 2, 3])
def test_crlb_matches_printed_proposition_1(receiver):
    gen = torch.Generator().manual_seed(10 + receiver)
    q, axes, p = _geometry()
    N = 6
    alpha = _gains(gen, 4)
    _, C = _random_cov(gen, 4, N)
    ours = xu_crlb(xu_ula(N), q, axes, p, alpha, receiver, covariance=C, snapshots=L, noise_power_w=SIGMA2)
    J_ours = xu_position_fim(xu_ula(N), q, axes, p, alpha, receiver, covariance=C, snapshots=L,
                             noise_power_w=SIGMA2)
    for tau_scale in (0.0, 0.37):  # the delay term is absorbed by the gains (documented)
        ref, J = paper_crlb(q, axes, p, alpha, C, receiver, N, tau_scale)
        assert_close(ours, torch.tensor(ref, dtype=torch.float64), rtol=1e-8, what=f"CRLB tau_scale={tau_scale}")
        assert_close(J_ours, torch.as_tensor(J), rtol=1e-8, what="position FIM")
    crb = xu_position_crb(xu_ula(N), q, axes, p, alpha, receiver, covariance=C, snapshots=L, noise_power_w=SIGMA2)
    assert_close(crb.diagonal().sum(), ours, rtol=1e-10, what="trace of CRB matrix")


def test_bistatic_pair_matches_printed_formula():
    """S = 2: one transmitter, one receiver (001's Scheme 3)."""
    gen = torch.Generator().manual_seed(3)
    q, axes, p = _geometry(2)
    alpha = _gains(gen, 2)
    _, C = _random_cov(gen, 2, 5)
    for r in (0, 1):
        ours = xu_crlb(xu_ula(5), q, axes, p, alpha, r, covariance=C, snapshots=L, noise_power_w=SIGMA2)
        ref, _ = paper_crlb(q, axes, p, alpha, C, r, 5)
        assert_close(ours, torch.tensor(ref, dtype=torch.float64), rtol=1e-8, what="bistatic CRLB")


# --- brute force: autograd of G(p, alpha) through the geometry ----------------------------


def test_position_fim_matches_autograd_of_the_echo_model():
    gen = torch.Generator().manual_seed(5)
    S, N, receiver = 4, 5, 2
    q, axes, p0 = _geometry(S)
    alpha = _gains(gen, S)
    _, C = _random_cov(gen, S, N)
    tx = [t for t in range(S) if t != receiver]
    n = torch.arange(N, dtype=torch.float64)

    def G_of(xi):
        p = xi[:2]
        a_all = []
        for b in range(S):
            th = angle_from_broadside(q[b], p, axes[b])
            a_all.append(torch.exp(-1j * math.pi * n * torch.sin(th)))
        blocks = []
        for t in range(S):
            if t == receiver:
                blocks.append(torch.zeros(N, N, dtype=torch.complex128))
            else:
                m = tx.index(t)
                g = torch.complex(xi[2 + m], xi[2 + len(tx) + m])
                blocks.append(g * torch.outer(a_all[receiver], a_all[t].conj()))
        return torch.cat(blocks, dim=1)  # [N, S*N]

    a_r = alpha[receiver, tx]
    xi0 = torch.cat([p0, a_r.real, a_r.imag])
    jac = torch.autograd.functional.jacobian(lambda x: torch.view_as_real(G_of(x)), xi0)  # [N, SN, 2, P]
    dG = torch.complex(jac[..., 0, :], jac[..., 1, :]).permute(2, 0, 1)  # [P, N, SN]
    Cs = [C[t] if t != receiver else torch.zeros(N, N, dtype=torch.complex128) for t in range(S)]
    R = torch.block_diag(*Cs)
    F = (2 * L / SIGMA2) * torch.einsum("pij,jk,qik->pq", dG, R, dG.conj()).real
    J = F[:2, :2] - F[:2, 2:] @ torch.linalg.solve(F[2:, 2:], F[2:, :2])
    ours = xu_position_fim(xu_ula(N), q, axes, p0, alpha, receiver, covariance=C, snapshots=L, noise_power_w=SIGMA2)
    assert_close(ours, J, rtol=1e-7, what="position FIM vs autograd")


def test_angles_and_jacobian_match_geometry_and_autograd():
    q, axes, p = _geometry(5)
    th = bs_angles(q, axes, p)
    assert_close(th, angle_from_broadside(q, p, axes), rtol=1e-12, what="angles")
    jac = torch.autograd.functional.jacobian(lambda x: angle_from_broadside(q, x, axes), p)
    assert_close(angle_jacobian(q, axes, p), jac, rtol=1e-10, what="d theta / d p")


def test_fim_symmetric_psd_and_scaling():
    gen = torch.Generator().manual_seed(7)
    q, axes, p = _geometry()
    alpha = _gains(gen, 4)
    B, C = _random_cov(gen, 4, 6)
    th = bs_angles(q, axes, p)
    F = xu_fim(xu_ula(6), th, alpha, 1, covariance=C, snapshots=L, noise_power_w=SIGMA2)
    assert_close(F, F.T, rtol=0, atol=1e-9 * float(F.abs().max()), what="symmetry")
    ev_ = torch.linalg.eigvalsh(F)
    assert float(ev_.min()) >= -1e-9 * float(ev_.max())
    Fb = xu_fim(xu_ula(6), th, alpha, 1, beams=B, snapshots=L, noise_power_w=SIGMA2)
    assert_close(Fb, F, rtol=1e-10, atol=1e-12 * float(F.abs().max()), what="beams vs covariance")
    kw = dict(covariance=C, noise_power_w=SIGMA2)
    c1 = xu_crlb(xu_ula(6), q, axes, p, alpha, 1, snapshots=L, **kw)
    c2 = xu_crlb(xu_ula(6), q, axes, p, alpha, 1, snapshots=2 * L, **kw)
    assert_close(c2, c1 / 2, rtol=1e-10, what="CRLB ~ 1/L")
    c3 = xu_crlb(xu_ula(6), q, axes, p, alpha, 1, snapshots=L, covariance=4 * C, noise_power_w=SIGMA2)
    assert_close(c3, c1 / 4, rtol=1e-10, what="CRLB ~ 1/power")


def test_silent_transmitter_equals_removing_that_bs():
    """A transmitting BS with zero power contributes nothing: same bound as the network without it."""
    gen = torch.Generator().manual_seed(11)
    q, axes, p = _geometry(4)
    alpha = _gains(gen, 4)
    _, C = _random_cov(gen, 4, 5)
    C[3] = 0
    full = xu_crlb(xu_ula(5), q, axes, p, alpha, 0, covariance=C, snapshots=L, noise_power_w=SIGMA2)
    sub = xu_crlb(xu_ula(5), q[:3], axes[:3], p, alpha[:3, :3], 0, covariance=C[:3], snapshots=L,
                  noise_power_w=SIGMA2)
    assert math.isfinite(float(full))
    assert_close(full, sub, rtol=1e-9, what="silent BS")
    # and the receiver's own transmission is ignored
    C2 = C.clone()
    C2[0] = 5 * torch.eye(5, dtype=torch.complex128)
    again = xu_crlb(xu_ula(5), q, axes, p, alpha, 0, covariance=C2, snapshots=L, noise_power_w=SIGMA2)
    assert_close(again, full, rtol=1e-12, what="receiver block ignored")


def test_batched_equals_looped():
    gen = torch.Generator().manual_seed(13)
    q, axes, p = _geometry()
    alpha = _gains(gen, 4)
    Cs = torch.stack([_random_cov(gen, 4, 5)[1] for _ in range(4)])  # [4, S, N, N]
    receivers = torch.tensor([0, 1, 2, 3])
    batched = xu_crlb(xu_ula(5), q, axes, p, alpha, receivers, covariance=Cs, snapshots=L, noise_power_w=SIGMA2)
    looped = torch.stack([xu_crlb(xu_ula(5), q, axes, p, alpha, int(r), covariance=C, snapshots=L,
                                  noise_power_w=SIGMA2) for r, C in zip(receivers, Cs)])
    assert_close(batched, looped, rtol=1e-12, what="batched")


# --- instances ---------------------------------------------------------------------------


def _roundtrip(inst):
    return bs.BsSelectionInstance.from_dict(json.loads(json.dumps(inst.to_dict())))


@pytest.mark.parametrize("preset", ["xu", "xu-fig2", "small"])
def test_json_roundtrip_exact(preset):
    inst = bs.FAMILY.presets[preset](4)
    back = _roundtrip(inst)
    for name in ("bs_positions_m", "array_axes", "target_position_m", "H", "alpha", "sinr_min_db",
                 "user_positions_m"):
        assert torch.equal(getattr(inst, name), getattr(back, name)), name
    for name in ("num_antennas", "snapshots", "p_max_dbm", "noise_comm_dbm", "noise_sense_dbm", "crb_max_m2"):
        assert getattr(inst, name) == getattr(back, name), name
    assert back.to_dict() == inst.to_dict()


def test_presets_follow_the_paper_and_the_seed():
    a, b, c = bs.xu_preset(1), bs.xu_preset(1), bs.xu_preset(2)
    assert torch.equal(a.H, b.H) and torch.equal(a.target_position_m, b.target_position_m)
    assert not torch.equal(a.H, c.H)
    assert (a.num_bs, a.num_users, a.num_antennas, a.snapshots) == (4, 5, 8, 1024)
    assert a.p_max_w == pytest.approx(10 ** 1.5)  # 45 dBm
    assert float(torch.linalg.vector_norm(a.user_positions_m, dim=-1).max()) <= 150.0
    f = bs.xu_fig2_preset(0)
    assert f.target_position_m.tolist() == [30.0, 60.0]
    assert f.user_positions_m.tolist()[0] == [-30.0, 80.0]
    # bistatic radar equation, recomputed here: |alpha_st|^2 = lam^2 rcs / ((4 pi)^3 d_s^2 d_t^2), rcs = 100 m^2
    lam = 299_792_458.0 / 3.5e9
    d = torch.linalg.vector_norm(f.bs_positions_m - f.target_position_m, dim=-1)
    expect = 100.0 * lam**2 / ((4 * math.pi) ** 3 * d[:, None] ** 2 * d[None, :] ** 2)
    off = ~torch.eye(4, dtype=torch.bool)
    assert_close(f.alpha.abs()[off] ** 2, expect[off], rtol=1e-10, what="radar equation")
    # broadside of every ULA faces the centre: the origin is at angle 0 from each BS
    assert_close(bs_angles(f.bs_positions_m, f.array_axes, torch.zeros(2, dtype=torch.float64)),
                 torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12, what="facing centre")


def _bad(mutate):
    obj = copy.deepcopy(bs.small_preset(0).to_dict())
    mutate(obj)
    return obj


@pytest.mark.parametrize("mutate, key", [
    (lambda o: o.update(extra=1), "extra"),
    (lambda o: o["params"].update(carrier_hz=3e9), "params.carrier_hz"),
    (lambda o: o["params"].pop("snapshots"), "params.snapshots"),
    (lambda o: o["params"].update(p_max_dbm=float("nan")), "params.p_max_dbm"),
    (lambda o: o["params"].update(crb_max_m2=-1.0), "params.crb_max_m2"),
    (lambda o: o["params"].update(sinr_min_db=[8.0]), "params.sinr_min_db"),
    (lambda o: o["H"]["re"].pop(), "H"),
    (lambda o: o["alpha"]["re"][0].__setitem__(1, float("inf")), "alpha"),
    (lambda o: (o["alpha"]["re"][0].__setitem__(1, 0.0), o["alpha"]["im"][0].__setitem__(1, 0.0)), "alpha"),
    (lambda o: o["alpha"]["re"][1].__setitem__(1, 1e-7), "alpha"),
    (lambda o: o["array_axes"].__setitem__(0, [0.0, 0.0]), "array_axes"),
    (lambda o: o.update(target_position_m=o["bs_positions_m"][1]), "target_position_m"),
    (lambda o: o.update(bs_positions_m=o["bs_positions_m"][:1]), "bs_positions_m"),
])
def test_bad_instances_name_the_key(mutate, key):
    with pytest.raises(InstanceError) as e:
        bs.BsSelectionInstance.from_dict(_bad(mutate))
    assert str(e.value).startswith(key), str(e.value)
    assert "\n" not in str(e.value)


def test_bad_solutions_name_the_key():
    inst = bs.small_preset(0)
    S, N, K = inst.num_bs, inst.num_antennas, inst.num_users
    z = torch.zeros
    good = bs.encode_solution({"receiver": torch.tensor(0), "W": z(S, N, K, dtype=torch.complex128),
                               "Rs": z(S, N, N, dtype=torch.complex128)})
    dec = bs.decode_solution(json.loads(json.dumps(good)), inst)
    assert int(dec["receiver"]) == 0 and dec["W"].shape == (S, N, K)
    for mutate, key in [(lambda o: o.update(receiver=S), "receiver"),
                        (lambda o: o.update(receiver=0.5), "receiver"),
                        (lambda o: o["W"]["re"].pop(), "W"),
                        (lambda o: o.update(foo=1), "foo"),
                        (lambda o: o.pop("Rs"), "Rs")]:
        obj = copy.deepcopy(good)
        mutate(obj)
        with pytest.raises(InstanceError) as e:
            bs.decode_solution(obj, inst)
        assert str(e.value).startswith(key), str(e.value)


# --- evaluator ---------------------------------------------------------------------------


def sinr_eq5(inst, W, Rs):
    """Eq. (5) of 001 written out, with a_{s,k} = 1 for non-zero beams (numpy)."""
    H, W, Rs = inst.H.numpy(), W.numpy(), Rs.numpy()
    S, _, K = W.shape
    out = []
    for k in range(K):
        sig = sum(abs(H[s, :, k].conj() @ W[s, :, k]) ** 2 for s in range(S))
        intf = sum(abs(H[s, :, k].conj() @ W[s, :, j]) ** 2 for s in range(S) for j in range(K) if j != k)
        intf += sum(np.real(H[s, :, k].conj() @ Rs[s] @ H[s, :, k]) for s in range(S))
        out.append(sig / (intf + inst.noise_comm_w))
    return np.array(out)


def zf_solution(inst, receiver, margin_db=0.5, sensing_w=1.0):
    """Hand-built feasible point: each user served by its strongest non-receiving BS with a beam
    zero-forcing every user from that BS; sensing covariance towards the target in the null space
    of all users' channels. SINR_k = |h^H w|^2 / sigma^2 is then set to Gamma_k + margin."""
    S, N, K = inst.num_bs, inst.num_antennas, inst.num_users
    W = torch.zeros(S, N, K, dtype=torch.complex128)
    Rs = torch.zeros(S, N, N, dtype=torch.complex128)
    target_db = inst.sinr_min_db + margin_db
    theta = bs_angles(inst.bs_positions_m, inst.array_axes, inst.target_position_m).numpy()
    for k in range(K):
        gains = [float(inst.H[s, :, k].norm()) if s != receiver else -1.0 for s in range(S)]
        s = int(np.argmax(gains))
        Hs = inst.H[s].numpy()  # [N, K]
        zf = np.linalg.pinv(Hs.conj().T)[:, k]  # h_j^H zf = delta_jk
        snr = 10 ** (float(target_db[k]) / 10)
        W[s, :, k] = torch.as_tensor(zf * math.sqrt(snr * inst.noise_comm_w))
    for s in range(S):
        if s == receiver:
            continue
        Hs = inst.H[s].numpy()
        proj = np.eye(N) - Hs @ np.linalg.pinv(Hs)
        a = proj @ np.exp(-1j * np.pi * np.arange(N) * np.sin(theta[s]))
        Rs[s] = torch.as_tensor(sensing_w * np.outer(a, a.conj()) / np.vdot(a, a).real)
    return {"receiver": torch.tensor(receiver), "W": W, "Rs": Rs}


def test_sinr_matches_eq5_and_comm_stacking():
    inst = bs.xu_preset(3)
    gen = torch.Generator().manual_seed(1)
    S, N, K = inst.num_bs, inst.num_antennas, inst.num_users
    W = crandn(gen, S, N, K) * 0.3
    mask = torch.zeros(S, 1, K)
    serving = torch.tensor([1, 2, 3, 1, 2])
    mask[serving, 0, torch.arange(K)] = 1
    W = W * mask
    V = crandn(gen, S, N, 2) * 0.2
    V[0] = 0
    Rs = V @ V.conj().transpose(-2, -1)
    got = ev.user_sinr(inst, W, ev.psd_factor(Rs))
    assert_close(got, torch.as_tensor(sinr_eq5(inst, W, Rs)), rtol=1e-9, what="SINR eq. (5)")
    assert ev.serving_bs(W).tolist() == serving.tolist()


def test_hand_built_feasible_and_infeasible_solutions():
    inst = bs.small_preset(2)
    sol = zf_solution(inst, receiver=0)
    # epsilon from the independent printed formula, with a 2x margin
    C = sol["W"] @ sol["W"].conj().transpose(-2, -1) + sol["Rs"]
    ref, _ = paper_crlb(inst.bs_positions_m, inst.array_axes, inst.target_position_m, inst.alpha, C, 0,
                        inst.num_antennas, snapshots=inst.snapshots, noise_w=inst.noise_sense_w)
    inst = inst.with_params(crb_max_m2=2 * ref)
    m = evaluate(inst, sol)
    assert m["feasible"], m
    assert m["crb_position_m2"] == pytest.approx(ref, rel=1e-8)
    np.testing.assert_allclose(m["sinr_db"], (inst.sinr_min_db + 0.5).numpy(), rtol=1e-8)
    expect_power = (sol["W"].abs() ** 2).sum((1, 2)) + torch.einsum("sii->s", sol["Rs"]).real
    np.testing.assert_allclose(m["power_w"], expect_power.numpy(), rtol=1e-12)
    assert m["objective"] == m["total_power_w"] == pytest.approx(float(expect_power.sum()))
    assert m["receiver"] == 0 and m["power_w"][0] == 0.0

    def broken(fn):
        s = {k: v.clone() for k, v in sol.items()}
        fn(s)
        return evaluate(inst, s)

    def talk(s):  # the receiver transmits a little
        s["Rs"][0] = 1e-3 * torch.eye(inst.num_antennas, dtype=torch.complex128)

    def second_beam(s):  # user 0 also gets a beam from another transmitting BS
        k0 = int(ev.serving_bs(s["W"])[0])
        other = [t for t in range(1, inst.num_bs) if t != k0][0]
        s["W"][other, :, 0] = 1e-3

    def loud(s):
        s["Rs"] = s["Rs"] * (1.01 * inst.p_max_w)

    def not_psd(s):
        s["Rs"][1] = s["Rs"][1] - 1e-3 * torch.eye(inst.num_antennas, dtype=torch.complex128)

    def weak(s):
        s["W"] = s["W"] * 10 ** (-1.0 / 20)  # 1 dB less than needed, 0.5 dB short of the target

    for fn, flag in [(talk, "receiver_silent"), (second_beam, "association_ok"), (loud, "power_ok"),
                     (not_psd, "rs_psd"), (weak, "sinr_ok")]:
        m2 = broken(fn)
        assert not m2[flag] and not m2["feasible"], (flag, m2)
    m3 = evaluate(inst.with_params(crb_max_m2=0.5 * ref), sol)
    assert not m3["crb_ok"] and not m3["feasible"]
    # declaring a transmitting BS as receiver is caught too
    assert not evaluate(inst, {**sol, "receiver": torch.tensor(1)})["feasible"]


def test_phase_rotation_invariance():
    inst = bs.small_preset(5)
    sol = zf_solution(inst, receiver=1)
    gen = torch.Generator().manual_seed(2)
    phases = torch.polar(torch.ones(inst.num_bs, 1, inst.num_users, dtype=torch.float64),
                         torch.rand(inst.num_bs, 1, inst.num_users, generator=gen, dtype=torch.float64) * 6.28)
    rot = {**sol, "W": sol["W"] * phases}
    a, b = evaluate(inst, sol), evaluate(inst, rot)
    np.testing.assert_allclose(b["sinr_db"], a["sinr_db"], rtol=1e-10)
    assert b["crb_position_m2"] == pytest.approx(a["crb_position_m2"], rel=1e-10)


def test_gradients_match_central_differences():
    inst = bs.small_preset(1)
    gen = torch.Generator().manual_seed(9)
    S, N, K = inst.num_bs, inst.num_antennas, inst.num_users
    W0 = crandn(gen, S, N, K)
    Rs = zf_solution(inst, 0)["Rs"]

    def crlb_log(W):
        return torch.log(ev.position_crlb(inst, W, Rs, 0))

    def sinr_sum(W):
        return torch.log(ev.user_sinr(inst, W, ev.psd_factor(Rs))).sum()

    for f in (crlb_log, sinr_sum):
        g_auto = autograd_grad(f, W0)
        g_num = central_difference_grad(f, W0, h=1e-6)
        assert_close(g_auto, g_num, rtol=1e-5, atol=1e-6 * float(g_auto.abs().max()), what=f.__name__)
        assert float(g_auto.abs().max()) > 0
