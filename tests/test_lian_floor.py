"""002's SPEB floor: the reduced SDP against a full-covariance SDP and a gradient method, invariances, cache, preset."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
import torch

import isac.metrics.bounds.lian_floor as lf
from isac.metrics.bounds.lian import angle_jacobian, lian_derivatives, lian_fim, lian_speb, stack_beams
from isac.metrics.fim import covariance_coefficients
from isac.scenario.instances.coop_localization import lian_preset, small_preset
from isac.scenario.io import InstanceError
from isac.scenario.problems import make_preset


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ISAC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ISAC_NO_DISK_CACHE", raising=False)
    monkeypatch.setattr(lf, "_MEMORY", {})
    torch.set_num_threads(1)


def _unit(inst):
    """The instance's FIM coefficients at unit budget scale, max |alpha| = 1, T = sigma^2 = 1."""
    alpha = inst.alpha / inst.alpha.abs().max()
    d = lian_derivatives(inst.array, inst.bs_positions_m, inst.target_position_m, alpha)
    return alpha, covariance_coefficients(d, snapshots=1.0, noise_power_w=1.0)


def _factor(inst) -> float:
    return inst.noise_sense_w / (inst.snapshots * float(inst.p_max_w.max()) * float(inst.alpha.abs().max()) ** 2)


def test_covariance_coefficients_match_the_engine():
    inst = small_preset(0)
    d = lian_derivatives(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha)
    C = covariance_coefficients(d, snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w)
    g = torch.Generator().manual_seed(1)
    W = torch.randn(inst.num_bs, inst.num_antennas, 3, dtype=torch.complex128, generator=g)
    R = stack_beams(W) @ stack_beams(W).conj().T
    F = lian_fim(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, W, inst.snapshots,
                 inst.noise_sense_w)
    F2 = torch.einsum("pqij,ji->pq", C, R).real
    assert torch.allclose(F2, F, rtol=1e-10, atol=1e-12 * float(F.abs().max()))


def _full_sdp_floor(inst) -> float:
    """The floor SDP over the whole NL x NL covariance (no subspace reduction), written out independently."""
    _, C = _unit(inst)
    n, length = inst.num_bs, inst.num_antennas
    nt, num_p, nw = n * length, C.shape[0], 2 * n
    # congruence scaling by the diagonal at the isotropic covariance
    F0 = torch.einsum("pqii->pq", C).real / length
    s = 1.0 / torch.sqrt(torch.diagonal(F0))
    Cs = (C * (s[:, None] * s[None, :])[..., None, None]).numpy()
    Q = (angle_jacobian(inst.bs_positions_m, inst.target_position_m) / s[:nw, None]).numpy()
    R = cp.Variable((nt, nt), hermitian=True)
    M = cp.Variable((nw, nw), symmetric=True)
    U = cp.Variable((3, 3), symmetric=True)
    rows = []
    for p in range(num_p):
        rows.append([cp.real(cp.trace(Cs[p, q] @ R)) for q in range(num_p)])
    F = cp.bmat(rows)
    Mpad = cp.bmat([[M, np.zeros((nw, num_p - nw))], [np.zeros((num_p - nw, nw)), np.zeros((num_p - nw, num_p - nw))]])
    # U in units of the isotropic covariance's SPEB, so that both LMIs are O(1)
    F0s = (F0 * s[:, None] * s[None, :]).numpy()
    je0 = F0s[:nw, :nw] - F0s[:nw, nw:] @ np.linalg.solve(F0s[nw:, nw:], F0s[nw:, :nw])
    s_ref = float(np.trace(np.linalg.inv(Q.T @ je0 @ Q)))
    J = s_ref * (Q.T @ M @ Q)
    cons = [0.5 * (F + F.T) - Mpad >> 0, cp.bmat([[U, np.eye(3)], [np.eye(3), 0.5 * (J + J.T)]]) >> 0, R >> 0]
    for i in range(n):
        cons.append(cp.real(cp.trace(R[i * length:(i + 1) * length, i * length:(i + 1) * length])) <= 1.0)
    prob = cp.Problem(cp.Minimize(cp.trace(U)), cons)
    prob.solve(solver="CLARABEL")
    assert prob.status == cp.OPTIMAL
    return float(prob.value) * s_ref * _factor(inst)


def test_floor_equals_the_full_covariance_sdp():
    inst = small_preset(0)
    floor = lf.speb_floor(inst, cache=False)
    assert floor.speb_m2 == pytest.approx(_full_sdp_floor(inst), rel=2e-4)
    assert floor.sdp_value_m2 == pytest.approx(floor.speb_m2, rel=1e-4)
    assert 1 <= floor.rank <= inst.num_bs * 3


def test_floor_matches_projected_gradient_on_the_covariance():
    """The SPEB is convex in R: a plain projected gradient on R = V V^H (V full size) reaches the floor."""
    inst = small_preset(1)
    alpha, _ = _unit(inst)
    n, length = inst.num_bs, inst.num_antennas
    g = torch.Generator().manual_seed(0)
    V = torch.randn(n, length, n * length, dtype=torch.complex128, generator=g)

    def project(v):
        norms = torch.sqrt((v.abs() ** 2).sum(dim=(-2, -1), keepdim=True))
        return v / torch.clamp(norms, min=1.0)

    V = project(V).requires_grad_(True)
    opt = torch.optim.Adam([V], lr=0.02)
    best = math.inf
    for _ in range(1500):
        opt.zero_grad()
        speb = lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, alpha, V, 1.0, 1.0)
        speb.backward()
        opt.step()
        with torch.no_grad():
            V.copy_(project(V))
            best = min(best, float(lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, alpha, V,
                                             1.0, 1.0)))
    floor = lf.speb_floor(inst, cache=False).speb_m2 / _factor(inst)
    assert best >= floor * (1 - 1e-6)  # nothing beats the floor
    assert best <= floor * 1.01  # and the gradient method gets there


def test_floor_lies_below_every_feasible_beam():
    inst = lian_preset(0)
    floor = lf.speb_floor_m2(inst)
    g = torch.Generator().manual_seed(2)
    W = torch.randn(200, inst.num_bs, inst.num_antennas, inst.num_streams, dtype=torch.complex128, generator=g)
    W = W * torch.sqrt(inst.p_max_w[:, None, None] / (W.abs() ** 2).sum(dim=(-2, -1), keepdim=True))
    speb = lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, W, inst.snapshots,
                     inst.noise_sense_w)
    assert bool((speb >= floor).all())
    # a full-power beam at the target is feasible too, and far above the floor
    from isac.metrics.bounds.lian import target_angles

    a = inst.array.steering(*target_angles(inst.bs_positions_m, inst.target_position_m))
    Wt = torch.zeros(inst.num_bs, inst.num_antennas, inst.num_streams, dtype=torch.complex128)
    Wt[:, :, -1] = torch.sqrt(inst.p_max_w)[:, None] * a
    steer = float(lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, Wt, inst.snapshots,
                            inst.noise_sense_w))
    assert steer > 10 * floor
    # the optimal covariance itself meets the budgets and reaches the floor
    fl = lf.speb_floor(inst, cache=False)
    R = fl.covariance
    blocks = torch.stack([R[i * 16:(i + 1) * 16, i * 16:(i + 1) * 16].diagonal().real.sum() for i in range(3)])
    assert bool((blocks <= inst.p_max_w * (1 + 1e-9)).all())
    lam, vec = torch.linalg.eigh(R)
    Wr = (vec * torch.sqrt(lam.clamp_min(0))).reshape(3, 16, 48)
    assert float(lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, Wr, inst.snapshots,
                           inst.noise_sense_w)) == pytest.approx(fl.speb_m2, rel=1e-8)


def test_floor_scales_with_power_and_ignores_the_common_phase():
    a = lf.speb_floor(lian_preset(0, p_max_dbm=10.0), cache=False).speb_m2
    b = lf.speb_floor(lian_preset(0, p_max_dbm=30.0), cache=False).speb_m2
    assert a / b == pytest.approx(100.0, rel=1e-4)  # SDPs solved separately
    inst = lian_preset(3)
    rotated = inst.with_params(alpha=inst.alpha * complex(math.cos(1.1), math.sin(1.1)))
    assert lf.speb_floor(rotated, cache=False).speb_m2 == pytest.approx(lf.speb_floor(inst, cache=False).speb_m2,
                                                                        rel=1e-5)


def test_cache_memory_disk_and_broken_files(tmp_path):
    inst = small_preset(0)  # the preset itself needed the floor (for gamma): in memory and on disk now
    assert lf.speb_floor(inst).cached == "memory"
    lf._MEMORY.clear()
    for f in (tmp_path / "speb-floor").glob("*.json"):
        f.unlink()
    first = lf.speb_floor(inst)
    assert first.cached == ""
    assert lf.speb_floor(small_preset(5)).cached == "memory"  # another draw: same geometry
    lf._MEMORY.clear()
    again = lf.speb_floor(inst)
    assert again.cached == "disk" and again.speb_m2 == first.speb_m2
    files = list((tmp_path / "speb-floor").glob("*.json"))
    assert len(files) == 1
    files[0].write_text("{not json")
    lf._MEMORY.clear()
    fresh = lf.speb_floor(inst)
    assert fresh.cached == "" and fresh.speb_m2 == pytest.approx(first.speb_m2, rel=1e-9)


def test_preset_gamma_is_a_multiple_of_the_floor():
    floor = lf.speb_floor_m2(lian_preset(0))
    assert lian_preset(4).speb_max_m2 == pytest.approx(2 * floor, rel=1e-12)
    assert lian_preset(4, gamma_over_floor=5.0).speb_max_m2 == pytest.approx(5 * floor, rel=1e-12)
    assert lian_preset(4, speb_max_m2=0.3).speb_max_m2 == 0.3
    assert lf.gamma_below_floor(lian_preset(1)) is None
    msg = lf.gamma_below_floor(lian_preset(1, gamma_over_floor=0.9))
    assert msg is not None and "below the SPEB floor" in msg and "\n" not in msg
    # as documented: 0.080 m^2 at 20 dBm for 002's geometry
    assert floor == pytest.approx(0.0796, rel=0.01)
    for bad in ({"gamma_over_floor": -1.0}, {"gamma_over_floor": float("nan")}, {"speb_max_m2": 0.0}):
        with pytest.raises(InstanceError, match="must be positive"):
            make_preset("coop-localization", "lian", 0, **bad)
    assert make_preset("coop-localization", "small", 0, gamma_over_floor=3.0).speb_max_m2 == pytest.approx(
        3 * lf.speb_floor_m2(small_preset(0)), rel=1e-12)
