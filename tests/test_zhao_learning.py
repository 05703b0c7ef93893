"""Tests of the 004 (Zhao) learned beamformers: GNN/DNN models, loss, training, checkpoints, solvers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import isac.metrics.problems.beampattern_sinr  # noqa: F401  (registers the evaluator)
import isac.solvers.zhao_learned as zl
from isac.learning import WEIGHTS_DIR
from isac.learning.train import (
    RANDOM_TARGET_SIZES,
    CheckpointError,
    TrainConfig,
    batch_instances,
    build_model,
    default_sizes,
    load_checkpoint,
    make_dataset,
    split_seeds,
    train,
)
from isac.learning.zhao import ZhaoDNN, ZhaoGNN, zhao_loss
from isac.metrics.evaluate import SINR_RTOL, evaluate
from isac.metrics.problems.beampattern_sinr import feasible_batch, objective_terms
from isac.scenario.instances.beampattern_sinr import make_zhao
from isac.solvers.base import OptionError, Status
from isac.solvers.registry import get_solver
from isac.tensors import hermitian

TINY = dict(n_train=48, n_val=16, n_test=8, epochs=3, batch_size=16, validate_every=1, threads=1)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A GNN trained for 3 epochs on 48 samples of the zhao preset (M=10, L=2, K=3, 8 dB)."""
    path = tmp_path_factory.mktemp("models") / "tiny-gnn.pt"
    payload = train(TrainConfig(kind="gnn", **TINY), path, echo=None)
    return path, payload


def _data(seeds, **kw):
    return batch_instances([make_zhao(s, **kw) for s in seeds])


def _outputs(model, data):
    with torch.no_grad():
        return model(data.H, data.A, data.power_w, data.noise_w)


# --- models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("trained", [False, True])
def test_gnn_permutation_equivariance(trained, tiny_ckpt):
    model = load_checkpoint(tiny_ckpt[0])[0] if trained else build_model(TrainConfig(seed=3), _data(range(20, 40)))
    data = _data(range(4), num_users=4)
    perm = torch.tensor([2, 0, 3, 1])
    C, S = _outputs(model, data)
    Cp, Sp = _outputs(model, dataclasses.replace(data, H=data.H[:, :, perm]))
    scale = C.abs().max()
    torch.testing.assert_close(Cp, C[:, :, perm], rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(Sp, S, rtol=0, atol=1e-5 * scale)
    R = C @ hermitian(C) + S @ hermitian(S)
    Rp = Cp @ hermitian(Cp) + Sp @ hermitian(Sp)
    torch.testing.assert_close(Rp, R, rtol=0, atol=1e-5 * R.abs().max())
    # the users are not interchangeable: swapping them must change the per-user beams
    assert not torch.allclose(C[:, :, 0], C[:, :, 2], atol=1e-3 * scale)


@pytest.mark.parametrize("users", [1, 3, 4])
def test_gnn_runs_for_other_user_and_target_counts(users, tiny_ckpt):
    model, config = load_checkpoint(tiny_ckpt[0])
    assert config.num_users == 2
    data = _data(range(3), num_users=users, num_targets=1 + users % 3)
    C, S = _outputs(model, data)
    assert C.shape == (3, 10, users) and S.shape == (3, 10, 10)
    assert C.dtype == torch.complex128 and bool(torch.isfinite(torch.view_as_real(C)).all())


@pytest.mark.parametrize("kind", ["gnn", "dnn"])
def test_normalisation_meets_power_exactly(kind):
    model = build_model(TrainConfig(kind=kind, seed=1))
    data = _data(range(5))
    power = torch.tensor([0.5, 1.0, 2.0, 10.0, 1e-3], dtype=torch.float64)
    C, S = model(data.H, data.A, power, data.noise_w)
    tr = torch.diagonal(C @ hermitian(C) + S @ hermitian(S), dim1=-2, dim2=-1).real.sum(-1)
    torch.testing.assert_close(tr, power, rtol=1e-12, atol=0)


def test_dnn_refuses_other_user_counts():
    model = build_model(TrainConfig(kind="dnn"))
    data = _data(range(2), num_users=3)
    with pytest.raises(ValueError, match="L=2 users"):
        _outputs(model, data)
    assert isinstance(model, ZhaoDNN) and isinstance(build_model(TrainConfig()), ZhaoGNN)


# --- loss -----------------------------------------------------------------------------------------


def test_loss_is_metrics_mse_plus_barrier():
    insts = [make_zhao(s, sinr_db=6.0) for s in range(4)]
    data = batch_instances(insts)
    model = build_model(TrainConfig(seed=2))
    C, S = _outputs(model, data)
    mu, margin_db = 0.7, 1.5
    t = zhao_loss(C, S, data.H, data.steering, data.desired, data.noise_w, data.sinr_target, mu, margin_db)
    for b, inst in enumerate(insts):  # batched (different H and desired patterns) == per instance
        ref = objective_terms(inst, C[b], S[b])
        barrier = torch.relu(10 ** (margin_db / 10) - ref["sinr"] / inst.sinr_target).sum()
        torch.testing.assert_close(t["mse"][b], ref["beampattern_mse"], rtol=1e-12, atol=0)
        torch.testing.assert_close(t["loss"][b], ref["beampattern_mse"] + mu * barrier, rtol=1e-12, atol=0)
    assert float(t["barrier"].sum()) > 0  # the untrained model violates the SINR targets
    tdb = zhao_loss(C, S, data.H, data.steering, data.desired, data.noise_w, data.sinr_target, mu, margin_db, "db")
    for b, inst in enumerate(insts):
        gap_db = inst.sinr_db + margin_db - 10 * torch.log10(objective_terms(inst, C[b], S[b])["sinr"])
        torch.testing.assert_close(tdb["barrier"][b], torch.relu(gap_db / 10).sum(), rtol=1e-12, atol=0)


def test_loss_gradient_reaches_every_parameter():
    model = build_model(TrainConfig(seed=0))
    data = _data(range(3))
    C, S = model(data.H, data.A, data.power_w, data.noise_w)
    zhao_loss(C, S, data.H, data.steering, data.desired, data.noise_w, data.sinr_target, 1.0)["loss"].sum().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())


# --- training and checkpoints ---------------------------------------------------------------------


def test_split_seeds_disjoint_and_far_from_small_seeds():
    s = split_seeds(TrainConfig())
    ranges = [s["train"], s["val"], s["test"]]
    assert [len(r) for r in ranges] == [10000, 1000, 1000]
    assert s["train"].stop == s["val"].start and s["val"].stop == s["test"].start
    assert s["train"].start > 10**9 and split_seeds(TrainConfig(seed=1))["train"].start != s["train"].start


def test_training_is_deterministic_and_loss_decreases(tmp_path, tiny_ckpt):
    cfg = TrainConfig(kind="gnn", **TINY)
    second = train(cfg, tmp_path / "b.pt", echo=None)
    first = tiny_ckpt[1]
    assert first["state_dict"].keys() == second["state_dict"].keys()
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert all(v.dtype == torch.float32 for v in first["state_dict"].values())
    hist = first["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # a different seed gives different weights (the check above can fail)
    third = train(TrainConfig(kind="gnn", **{**TINY, "epochs": 1, "seed": 5}), tmp_path / "c.pt", echo=None)
    assert not torch.equal(first["state_dict"]["out_c.weight"], third["state_dict"]["out_c.weight"])


def test_dnn_trains(tmp_path):
    payload = train(TrainConfig(kind="dnn", **{**TINY, "epochs": 2}), tmp_path / "d.pt", echo=None)
    model, cfg = load_checkpoint(tmp_path / "d.pt")
    assert cfg.kind == "dnn" and payload["history"][-1]["train_loss"] < payload["history"][0]["train_loss"] * 1.5


def test_checkpoint_round_trip(tiny_ckpt):
    path, payload = tiny_ckpt
    model, config = load_checkpoint(path)
    assert config == TrainConfig(kind="gnn", **TINY)
    assert payload["format"] == "isac-zhao-model/1" and payload["test"]["n"] == 8
    fresh = build_model(config)
    fresh.load_state_dict(payload["state_dict"])
    data = make_dataset(TrainConfig(**{**TINY, "n_val": 3}), "val")
    C1, S1 = _outputs(model, data)
    C2, S2 = _outputs(fresh, data)
    assert torch.equal(C1, C2) and torch.equal(S1, S2)


def test_bad_checkpoints_raise_one_line(tmp_path, tiny_ckpt):
    raw = tiny_ckpt[0].read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    bad = torch.load(tiny_ckpt[0], weights_only=True)
    bad["state_dict"].pop("out_c.weight")
    torch.save(bad, tmp_path / "missing_key.pt")
    for name, what in [("trunc.pt", "not a readable"), ("foreign.pt", "not an isac zhao model"),
                       ("text.pt", "not a readable"), ("nope.pt", "no such"), ("missing_key.pt", "do not fit")]:
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and name in msg and what in msg


# --- solvers --------------------------------------------------------------------------------------


def _solver(name, tiny_ckpt, **kw):
    return get_solver("beampattern-sinr", name, {"checkpoint": str(tiny_ckpt[0]), **kw})


def test_gnn_ip_projects_exactly_when_infeasible(tiny_ckpt):
    gnn, gnn_ip = _solver("gnn", tiny_ckpt), _solver("gnn-ip", tiny_ckpt)
    seen = set()
    for seed in range(3):
        inst = make_zhao(seed)
        plain = gnn.solve(inst)
        res = gnn_ip.solve(inst)
        assert res.feasible and res.status == Status.CONVERGED
        assert res.info["projected"] == (not plain.feasible)
        assert set(res.timings) >= {"gnn_s", "projection_s", "solve_s"}
        assert (res.timings["projection_s"] > 0) == res.info["projected"]
        seen.add(res.info["projected"])
        if not plain.feasible:
            assert plain.status == Status.INFEASIBLE
    assert True in seen  # a 3-epoch model is infeasible at 8 dB: the projection path ran


def test_gnn_ip_skips_projection_when_feasible(tiny_ckpt, monkeypatch):
    inst = make_zhao(7, sinr_db=8.0)
    zf = get_solver("beampattern-sinr", "zf").solve(inst)
    assert zf.feasible

    def fake_forward(model, inst, device):
        return zf.solution["C"], zf.solution["S"], True

    def no_projection(*a, **k):
        raise AssertionError("projection must not run on a feasible GNN output")

    monkeypatch.setattr(zl, "_forward_one", fake_forward)
    monkeypatch.setattr(zl, "_project", no_projection)
    res = _solver("gnn-ip", tiny_ckpt).solve(inst)
    assert res.feasible and res.info == {"projected": False, "model": "gnn"} and res.timings["projection_s"] == 0.0
    assert torch.equal(res.solution["C"], zf.solution["C"])


def test_solve_batch_matches_solve(tiny_ckpt):
    gnn = _solver("gnn", tiny_ckpt)
    insts = [make_zhao(s) for s in range(5)]
    batch = gnn.solve_batch(insts)
    for inst, rb in zip(insts, batch):
        r1 = gnn.solve(inst)
        # float32 network: batching changes the summation order, ~1e-6 relative differences
        atol = 1e-5 * float(r1.solution["C"].abs().max())
        torch.testing.assert_close(rb.solution["C"], r1.solution["C"], rtol=0, atol=atol)
        torch.testing.assert_close(rb.solution["S"], r1.solution["S"], rtol=0, atol=atol)
        assert rb.metrics["beampattern_mse"] == pytest.approx(r1.metrics["beampattern_mse"], rel=1e-4)
        assert rb.solution["C"].dtype == torch.complex128 and rb.time_s > 0


def test_gnn_ip_solve_batch_projects_the_infeasible_outputs(tiny_ckpt):
    """The batch path of gnn-ip is Algorithm 1 too: same decisions and points as solve(), all feasible."""
    gnn_ip = _solver("gnn-ip", tiny_ckpt)
    insts = [make_zhao(s) for s in range(4)] + [make_zhao(9, sinr_db=3.0)]
    batch = gnn_ip.solve_batch(insts)
    for inst, rb in zip(insts, batch):
        r1 = gnn_ip.solve(inst)
        assert rb.feasible and rb.status == Status.CONVERGED and rb.info == r1.info
        assert (rb.timings["projection_s"] > 0) == rb.info["projected"]
        assert rb.time_s == pytest.approx(rb.timings["gnn_s"] + rb.timings["projection_s"])
        assert rb.metrics["beampattern_mse"] == pytest.approx(r1.metrics["beampattern_mse"], rel=1e-3)
    assert any(r.info["projected"] for r in batch)


def test_batched_feasibility_check_agrees_with_the_evaluator():
    """feasible_batch (what gnn-ip checks) against evaluate(): near the SINR and power limits, both ways."""
    insts = [make_zhao(s, sinr_db=float(s % 5) * 3.0) for s in range(40)]
    zf = [get_solver("beampattern-sinr", "zf").solve(i) for i in insts]
    C = torch.stack([r.solution["C"] for r in zf])
    S = torch.stack([r.solution["S"] for r in zf])
    # ZF meets every SINR with equality: shrink the user beams a little or not at all, give the power
    # to S (ZF keeps it out of the users' channels), then perturb the total power around the tolerance.
    shrink = 1 - torch.tensor([0.0, 1e-7, 1e-5, 1e-3] * 10, dtype=torch.float64)
    C = C * shrink[:, None, None]
    c_pow, s_pow = (C.abs() ** 2).sum((-2, -1)), (S.abs() ** 2).sum((-2, -1))
    S = S * ((1.0 - c_pow) / s_pow).sqrt()[:, None, None]  # P0 = 1 W again
    scale = 1 + torch.tensor([0.0, 1e-9, 1e-5, -1e-5, 1e-3] * 8, dtype=torch.float64)
    C, S = C * scale.sqrt()[:, None, None], S * scale.sqrt()[:, None, None]
    got = feasible_batch(insts, C, S).tolist()
    want = [evaluate(i, {"C": C[b], "S": S[b]})["feasible"] for b, i in enumerate(insts)]
    assert got == want and 0 < sum(want) < len(want)
    assert {evaluate(i, {"C": C[b], "S": S[b]})["power_met"] for b, i in enumerate(insts) if not want[b]} == {True, False}


def test_model_lookup_errors_are_one_line(tmp_path, tiny_ckpt):
    (tmp_path / "m.pt").write_bytes(tiny_ckpt[0].read_bytes())
    inst = make_zhao(0, num_users=3, sinr_db=9.0)
    with pytest.raises(OptionError) as e:
        get_solver("beampattern-sinr", "gnn", {"models": str(tmp_path)}).solve(inst)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("no trained zhao-gnn for M=10, L=3, Gamma0=9 dB in ")
    assert "isac train zhao-gnn --users 3 --sinr-db 9 --out DIR" in msg
    # the L = 2 model in the folder is found for L = 2 (and via train_users for L = 3 at 8 dB)
    res = get_solver("beampattern-sinr", "gnn", {"models": str(tmp_path), "train_users": 2}).solve(
        make_zhao(0, num_users=3))
    assert res.solution["C"].shape == (10, 3)
    with pytest.raises(OptionError, match="no trained zhao-dnn"):
        get_solver("beampattern-sinr", "dnn", {"models": str(tmp_path)}).solve(make_zhao(0))
    with pytest.raises(OptionError, match="no such checkpoint") as e:
        get_solver("beampattern-sinr", "gnn", {"checkpoint": str(tmp_path / "none.pt")}).solve(make_zhao(0))
    assert "\n" not in str(e.value)


def test_model_dir_env(tmp_path, tiny_ckpt, monkeypatch):
    (tmp_path / "m.pt").write_bytes(tiny_ckpt[0].read_bytes())
    monkeypatch.setenv("ISAC_MODEL_DIR", str(tmp_path))
    assert zl.model_folders("") == [tmp_path, WEIGHTS_DIR]
    assert zl.find_checkpoint("gnn", 10, 2, 8.0, zl.model_folders("")) == tmp_path / "m.pt"


@pytest.mark.parametrize("kind", ["gnn", "dnn"])
def test_shipped_checkpoints(kind):
    path = WEIGHTS_DIR / f"zhao-{kind}-L2-8dB.pt"
    assert path.is_file(), f"missing shipped checkpoint {path}"
    assert path.stat().st_size < 3 * 2**20
    model, config = load_checkpoint(path)
    assert (config.kind, config.num_antennas, config.num_users, config.num_targets, config.sinr_db) == (
        kind, 10, 2, 3, 8.0)
    # The weights README's regeneration command (`isac train zhao-KIND --threads 1`, defaults otherwise)
    # builds exactly this config: random targets get the larger training set.
    assert config == TrainConfig(kind=kind, threads=1, lr_schedule="cosine", **default_sizes(None))
    assert config.n_train == RANDOM_TARGET_SIZES["n_train"] > TrainConfig().n_train
    folders = [WEIGHTS_DIR]
    assert zl.find_checkpoint(kind, 10, 2, 8.0, folders) == path
    solver = get_solver("beampattern-sinr", "gnn-ip" if kind == "gnn" else "dnn", {"models": str(WEIGHTS_DIR)})
    for seed in range(3):
        res = solver.solve(make_zhao(seed))
        assert math.isfinite(res.metrics["beampattern_mse"])
        assert res.metrics["power_w"] == pytest.approx(1.0, rel=1e-9)
        if kind == "gnn":
            assert res.feasible
            sinr_ok = evaluate(make_zhao(seed), res.solution)["min_sinr_db"] >= 8.0 + 10 * math.log10(1 - SINR_RTOL)
            assert sinr_ok


# --- fixed target sets and the learning-rate schedule ---------------------------------------------


def test_fixed_target_config_and_samples():
    cfg = TrainConfig(kind="gnn", num_targets=5, target_angles_deg=(-40, 0, 40), **TINY)
    assert cfg.num_targets == 3 and cfg.target_angles_deg == [-40.0, 0.0, 40.0]
    data = make_dataset(cfg, "val")
    want = make_zhao(0, target_angles_deg=(-40.0, 0.0, 40.0))
    for b in range(len(data)):  # every sample carries the fixed steering vectors
        torch.testing.assert_close(data.A[b], zl.target_steering(want), rtol=0, atol=0)
    assert TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg  # survives the checkpoint round trip
    for bad in ([], [float("nan")], [100.0], ["x"]):
        with pytest.raises(ValueError, match="target_angles_deg"):
            TrainConfig(target_angles_deg=bad)


def test_cosine_schedule_decays_to_one_percent():
    from isac.learning.train import lr_at

    cfg = TrainConfig(epochs=11, lr=2e-3, lr_schedule="cosine")
    rates = [lr_at(cfg, e) for e in range(1, 12)]
    assert rates[0] == pytest.approx(2e-3) and rates[-1] == pytest.approx(2e-5)
    assert rates[5] == pytest.approx(2e-3 * (0.01 + 0.99 * 0.5))  # half way: the mid point of the cosine
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert lr_at(dataclasses.replace(cfg, lr_schedule="constant"), 7) == 2e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_fixed_target_model_is_preferred_and_never_used_on_other_targets(tmp_path, tiny_ckpt):
    generic = tmp_path / "a-generic.pt"
    generic.write_bytes(tiny_ckpt[0].read_bytes())
    fixed = tmp_path / "b-fixed.pt"
    train(TrainConfig(kind="gnn", target_angles_deg=[-40.0, 15.0, 30.0], **{**TINY, "epochs": 1}), fixed, echo=None)
    folders = [tmp_path]
    assert zl.find_checkpoint("gnn", 10, 2, 8.0, folders, [30.0, -40.0, 15.0]) == fixed  # a set: order is free
    assert zl.find_checkpoint("gnn", 10, 2, 8.0, folders, [-40.0, 0.0, 40.0]) == generic
    assert zl.find_checkpoint("gnn", 10, 2, 8.0, [tmp_path / "nothing", tmp_path], [-40.0, 15.0, 30.0]) == fixed
    generic.unlink()
    assert zl.find_checkpoint("gnn", 10, 2, 8.0, folders, [-40.0, 0.0, 40.0]) is None
    solver = get_solver("beampattern-sinr", "gnn", {"models": str(tmp_path)})
    res = solver.solve(make_zhao(3, target_angles_deg=(-40.0, 15.0, 30.0)))
    assert res.solution["C"].shape == (10, 2)
    with pytest.raises(OptionError, match="no trained zhao-gnn"):
        solver.solve(make_zhao(3))
    explicit = get_solver("beampattern-sinr", "gnn", {"checkpoint": str(fixed)})
    with pytest.raises(OptionError, match="was trained on targets") as e:
        explicit.solve(make_zhao(3))
    assert "\n" not in str(e.value)
    batch = [make_zhao(s, target_angles_deg=(-40.0, 15.0, 30.0)) for s in range(2)] + [make_zhao(5)]
    with pytest.raises(OptionError, match="every instance of the batch"):
        explicit.solve_batch(batch)


def test_phase_augmentation_is_a_symmetry_of_the_problem():
    from isac.learning.train import augment_phase

    data = _data(range(4))
    Hr = augment_phase(data.H, torch.Generator().manual_seed(3))
    ratio = Hr / data.H  # one unit-modulus factor per (sample, user), the same on every antenna
    torch.testing.assert_close(ratio.abs(), torch.ones_like(ratio.abs()))
    torch.testing.assert_close(ratio, ratio[:, :1, :].expand_as(ratio))
    assert float((ratio[:, 0, :].angle() - ratio[0, 0, 0].angle()).abs().max()) > 0.1
    # rotating c_l with its user's channel leaves the loss terms (MSE, every SINR) unchanged
    g = torch.Generator().manual_seed(5)
    C = torch.randn(4, 10, 2, dtype=torch.complex128, generator=g)
    S = torch.randn(4, 10, 10, dtype=torch.complex128, generator=g)
    phase = ratio[:, :1, :]
    a = zhao_loss(C, S, data.H, data.steering, data.desired, data.noise_w, data.sinr_target, mu=1.0)
    b = zhao_loss(C * phase, S, Hr, data.steering, data.desired, data.noise_w, data.sinr_target, mu=1.0)
    for key in ("mse", "sinr", "loss"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="flip")
