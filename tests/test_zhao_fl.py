"""The feasibility layer and GNN-FL of 004 (ours), its compiled (Numba) twin, and our ADMM projection against CVXPY."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from isac.learning.train import TrainConfig, build_model, make_dataset, train
from isac.learning.zhao import CompiledForward, feasible_powers
from isac.metrics.comm import sinr
from isac.metrics.evaluate import evaluate
from isac.scenario.instances.beampattern_sinr import make_zhao
from isac.solvers.base import Status
from isac.solvers.registry import get_solver

TINY = dict(n_train=48, n_val=16, n_test=16, epochs=2, batch_size=16, threads=1, validate_every=1)


def _directions(seed, n, m=10, users=2):
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(n, m, users, generator=g, dtype=torch.float64) + 1j * torch.randn(n, m, users, generator=g, dtype=torch.float64)
    S = torch.randn(n, m, m, generator=g, dtype=torch.float64) + 1j * torch.randn(n, m, m, generator=g, dtype=torch.float64)
    return C, S


def _least_power_lp(H, U, gamma, noise):
    """min sum p s.t. p_l |h_l^H u_l|^2 >= gamma (sum_{j != l} p_j |h_l^H u_j|^2 + noise), p >= 0 (scipy)."""
    G = (np.abs(H.conj().T @ U) ** 2) / noise
    k = G.shape[0]
    A_ub = gamma * G.copy()
    A_ub[np.arange(k), np.arange(k)] = -np.diag(G)
    res = linprog(np.ones(k), A_ub=A_ub, b_ub=-gamma * np.ones(k), bounds=[(0, None)] * k, method="highs")
    return res.fun if res.status == 0 else math.inf


def test_layer_meets_targets_and_power_and_matches_the_least_power_lp():
    inst = [make_zhao(s) for s in range(40)]
    H = torch.stack([i.H for i in inst])
    C, S = _directions(0, 40)
    C = C + 30 * H / H.abs().amax((-2, -1), keepdim=True)  # roughly aligned: some valid, some not
    g = torch.Generator().manual_seed(1)
    lu, ls = torch.randn(40, 2, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64)
    gamma = inst[0].sinr_target
    Cf, Sf, valid = feasible_powers(H, C, S, lu, ls, 1.0, inst[0].noise_w, gamma)
    assert 0 < int(valid.sum()) < 40
    rates = sinr(H, torch.cat([Cf, Sf], -1), inst[0].noise_w)
    power = (Cf.abs() ** 2).sum((-2, -1)) + (Sf.abs() ** 2).sum((-2, -1))
    for b in range(40):
        U = (C[b] / (C[b].abs() ** 2).sum(0).sqrt()).numpy()
        need = _least_power_lp(H[b].numpy(), U, gamma * (1 + 1e-6), inst[0].noise_w)
        # the layer is valid exactly when the directions can meet the targets with power < P0
        assert bool(valid[b]) == (need < 1.0), b
        if valid[b]:
            assert float(power[b]) == pytest.approx(1.0, rel=1e-12)
            assert bool((rates[b] >= gamma * (1 + 1e-6) * (1 - 1e-9)).all())
            res = evaluate(inst[b], {"C": Cf[b], "S": Sf[b]})
            assert res["feasible"]
            # directions are kept
            cos = (Cf[b].conj() * C[b]).sum(0).abs() / (Cf[b].norm(dim=0) * C[b].norm(dim=0))
            assert torch.allclose(cos, torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_layer_with_all_power_to_sensing_meets_the_weak_targets_with_equality():
    inst = make_zhao(3)
    H = inst.H[None]
    C, S = _directions(2, 1)
    C = C + 30 * H / H.abs().max()
    Cf, Sf, valid = feasible_powers(H, C, S, torch.zeros(1, 2, dtype=torch.float64),
                                    torch.tensor([40.0], dtype=torch.float64), 1.0, inst.noise_w, inst.sinr_target)
    assert bool(valid[0])
    rates = sinr(H, torch.cat([Cf, Sf], -1), inst.noise_w)[0]
    # alpha = sigmoid(40) = 1: no slack, every SINR at the (tightened) target
    torch.testing.assert_close(rates, torch.full((2,), inst.sinr_target * (1 + 1e-6), dtype=torch.float64), rtol=1e-9, atol=0)


def test_layer_gradients_are_finite_with_invalid_rows():
    inst = [make_zhao(s) for s in range(8)]
    H = torch.stack([i.H for i in inst])
    C, S = _directions(4, 8)
    aligned = torch.tensor([30.0, 0.0] * 4, dtype=torch.float64)[:, None, None]  # half random: invalid at 10
    C = (C + aligned * H / H.abs().amax((-2, -1), keepdim=True)).requires_grad_(True)
    lu = torch.zeros(8, 2, dtype=torch.float64, requires_grad=True)
    Cf, Sf, valid = feasible_powers(H, C, S, lu, torch.zeros(8, dtype=torch.float64), 1.0, inst[0].noise_w, 10.0)
    assert not bool(valid.all()) and bool(valid.any())
    ((Cf.abs() ** 2).sum() + (Sf.abs() ** 2).sum() + (Cf[..., 0].real).sum()).backward()
    assert torch.isfinite(C.grad).all() and torch.isfinite(lu.grad).all()


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_z_matrix_elimination_matches_lapack_and_the_spectral_radius_test(n):
    from isac.learning.zhao import _solve_z_matrix

    g = torch.Generator().manual_seed(n)
    X = torch.rand(400, n, n, generator=g, dtype=torch.float64) * torch.logspace(-2, 0.3, 400, dtype=torch.float64)[:, None, None]
    X = X * (1 - torch.eye(n, dtype=torch.float64))
    A = torch.eye(n, dtype=torch.float64) - X
    rhs = torch.rand(400, n, 3, generator=g, dtype=torch.float64)
    sol, ok = _solve_z_matrix(A, rhs)
    radius = torch.linalg.eigvals(X).abs().amax(-1)
    m_matrix = radius < 1  # I - X with X >= 0 is a nonsingular M-matrix iff rho(X) < 1
    assert torch.equal(ok, m_matrix)
    assert 0 < int(ok.sum()) < 400 or n == 1
    ref = torch.linalg.solve(A[ok], rhs[ok])
    torch.testing.assert_close(sol[ok], ref, rtol=1e-9, atol=1e-12)
    assert bool((sol[ok] >= 0).all())  # A^-1 >= 0 for an M-matrix


@pytest.mark.parametrize("kind,users", [("gnn", 2), ("gnn-fl", 2), ("gnn-fl", 1), ("gnn-fl", 3), ("gnn", 4)])
def test_compiled_twin_matches_the_torch_module(kind, users):
    cfg = TrainConfig(kind=kind, n_train=64, n_val=8, n_test=0, epochs=1, num_users=users)
    data = make_dataset(cfg, "train")
    model = build_model(cfg, data)
    model.eval()
    twin = CompiledForward(model)
    with torch.no_grad():
        if kind == "gnn-fl":
            C, S, valid = model.forward_valid(data.H, data.A, data.power_w, data.noise_w, data.sinr_target)
        else:
            C, S = model(data.H, data.A, data.power_w, data.noise_w)
            valid = torch.ones(len(data), dtype=torch.bool)
    for b in range(16):
        Cn, Sn, vn = twin(data.H[b].numpy(), data.A[b].numpy(), data.power_w, data.noise_w, data.sinr_target)
        assert vn == bool(valid[b])
        scale = float(C[b].abs().max())
        np.testing.assert_allclose(Cn, C[b].numpy(), rtol=0, atol=1e-4 * scale)  # float32 module, float64 twin
        np.testing.assert_allclose(Sn, S[b].numpy(), rtol=0, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def fl_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flmodels")
    path = folder / "tiny-gnn-fl.pt"
    train(TrainConfig(kind="gnn-fl", **TINY), path, echo=None)
    return folder, path


def test_gnn_fl_solver_and_gnn_ip_prefer_the_fl_model(fl_ckpt):
    folder, path = fl_ckpt
    insts = [make_zhao(s) for s in range(6)]
    fl = get_solver("beampattern-sinr", "gnn-fl", {"models": str(folder)})
    ip = get_solver("beampattern-sinr", "gnn-ip", {"models": str(folder)})
    for inst in insts:
        r = fl.solve(inst)
        rip = ip.solve(inst)
        assert rip.info["model"] == "gnn-fl" and rip.feasible and rip.status == Status.CONVERGED
        assert rip.info["projected"] == (not r.feasible)
        if r.feasible:  # a valid layer output is used as it is
            torch.testing.assert_close(rip.solution["C"], r.solution["C"])
        else:
            assert r.status == Status.INFEASIBLE
    batch = ip.solve_batch(insts)
    assert all(b.feasible for b in batch)
    with pytest.raises(Exception, match="no trained zhao-gnn"):
        get_solver("beampattern-sinr", "gnn-ip", {"models": str(folder), "model": "gnn"}).solve(insts[0])


def test_admm_projection_matches_cvxpy():
    from isac.solvers.zhao_projection import project_feasible_fast
    from isac.solvers.zhao_sdr import project_feasible

    for seed in (0, 1, 2):
        inst = make_zhao(seed)
        C, S = _directions(10 + seed, 1)
        C, S = C[0], S[0] * 0.3
        f = math.sqrt(inst.power_w / float((C.abs() ** 2).sum() + (S.abs() ** 2).sum()))
        C, S = C * f, S * f
        assert not evaluate(inst, {"C": C, "S": S})["feasible"]
        ref = project_feasible(inst, C, S, backend="CLARABEL")
        ours = project_feasible_fast(inst, C, S)
        assert ref[2] == Status.CONVERGED and ours[2] == Status.CONVERGED, ours[3]
        assert evaluate(inst, {"C": ours[0], "S": ours[1]})["feasible"]

        def dist(Ct, St):
            R, Rt = C @ C.conj().T + S @ S.conj().T, Ct @ Ct.conj().T + St @ St.conj().T
            lifted = sum(float(((torch.outer(C[:, l], C[:, l].conj()) - torch.outer(Ct[:, l], Ct[:, l].conj())).abs() ** 2).sum())
                         for l in range(C.shape[1]))
            return float(((R - Rt).abs() ** 2).sum()), lifted

        (r_ref, _), (r_ours, _) = dist(*ref[:2]), dist(*ours[:2])
        assert r_ours == pytest.approx(r_ref, rel=1e-3, abs=1e-9)


def test_admm_projection_refuses_bad_input_and_certifies_the_snr_bound():
    from isac.solvers.zhao_projection import project_feasible_fast

    inst = make_zhao(0)
    C, S = _directions(0, 1)
    bad = C[0].clone()
    bad[0, 0] = float("nan")
    assert project_feasible_fast(inst, bad, S[0])[2] == Status.NUMERICAL_ERROR
    hard = make_zhao(0, sinr_db=60.0)
    out = project_feasible_fast(hard, C[0], S[0])
    assert out[2] == Status.INFEASIBLE and "SNR bound" in out[3]


def test_shipped_fl_weights_have_the_config_the_readme_commands_give():
    """`isac train zhao-gnn-fl --target-angles=... --threads 1` (weights README) must rebuild the shipped configs."""
    from isac.learning import WEIGHTS_DIR
    from isac.learning.train import DEFAULT_MU, default_sizes, read_checkpoint

    readme = (WEIGHTS_DIR / "README.md").read_text().splitlines()
    for path in sorted(WEIGHTS_DIR.glob("zhao-gnn-fl-*.pt")):
        cfg = read_checkpoint(path)["config_obj"]
        sizes = default_sizes(cfg.target_angles_deg, "gnn-fl")
        assert all(getattr(cfg, k) == v for k, v in sizes.items()), path.name
        assert cfg.mu == DEFAULT_MU["gnn-fl"] and cfg.threads == 1 and cfg.lr_schedule == "cosine" and cfg.seed == 0
        assert read_checkpoint(path)["test"]["feasible_pct"] >= 95.0
        command = [line for line in readme if f"--out $W/{path.name}" in line]
        assert len(command) == 1, f"weights README has no training command for {path.name}"
        words = command[0].split()
        margin = float(words[words.index("--margin-db") + 1]) if "--margin-db" in words else TrainConfig().margin_db
        assert cfg.margin_db == margin, path.name


@pytest.mark.parametrize("kind", ["gnn", "gnn-fl"])
def test_a_broadcast_target_set_gives_the_same_outputs_as_a_materialised_one(kind):
    """A fixed target set is encoded once (stride-0 steering); the result must not depend on that."""
    cfg = TrainConfig(kind=kind, n_train=32, n_val=8, n_test=0, epochs=1, target_angles_deg=(-40.0, 0.0, 40.0))
    data = make_dataset(cfg, "train")
    model = build_model(cfg, data)
    model.eval()
    A_once = data.A[:1].expand(len(data), -1, -1)
    assert A_once.stride(0) == 0 and torch.equal(A_once, data.A)
    with torch.no_grad():
        out_b = model(data.H, A_once, data.power_w, data.noise_w)
        out_m = model(data.H, data.A.contiguous(), data.power_w, data.noise_w)
    for x, y in zip(out_b, out_m):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5 * float(y.abs().max()))
