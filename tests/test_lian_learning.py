"""Tests of the 002 (Lian) learned beamformers: graph, LHGNN / Homo GNN / CNN, loss, training, checkpoints, solvers."""

from __future__ import annotations

import math

import pytest
import torch

import isac.solvers.lian_learned as ll
from isac.learning import WEIGHTS_DIR
from isac.learning.lian import (COMM_EDGE_TYPES, SENSE_EDGE_TYPES, LHGNN, HomoGNN, LianCNN, lian_graph,
                                paper_widths, power_normalise)
from isac.learning.lian_train import (DATA_VERSION, LianTrainConfig, batch_loss, build_model, config_for,
                                      data_from_instances, evaluate_model, lian_loss, load_checkpoint, make_instance,
                                      predict, read_checkpoint, split_seeds, train)
from isac.learning.train import CheckpointError
from isac.metrics.evaluate import evaluate
from isac.metrics.problems.coop_localization import objective_terms
from isac.scenario.instances.coop_localization import lian_preset
from isac.solvers.base import OptionError, Status
from isac.solvers.registry import get_solver

SMALL = dict(widths=[16, 32], fc_hidden=16, cnn_channels=[8], cnn_hidden=[32])
TINY = dict(SMALL, n_train=32, n_val=16, n_test=16, epochs=2, batch_size=16, threads=1, lr=1e-3)
GNN_KINDS = ("lhgnn", "lhgnn-noatt", "homognn", "lhgnn-rzf")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def insts():
    return [lian_preset(s) for s in range(6)]


@pytest.fixture(scope="module")
def data(insts):
    return data_from_instances(insts)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """An LHGNN trained for 2 epochs on 32 samples of the lian preset (20 dBm, gamma = 2x floor)."""
    path = tmp_path_factory.mktemp("lian-models") / "lian-lhgnn-20dBm-g2.pt"
    payload = train(LianTrainConfig(kind="lhgnn", **TINY), path, echo=None)
    return path, payload


def _model(kind: str, seed: int = 0):
    return build_model(LianTrainConfig(kind=kind, seed=seed, **SMALL))


def _out(model, H, A, p, noise):
    with torch.no_grad():
        return model(H, A, p, noise)


# --- graph ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,z", [(3, 5, 1), (3, 5, 2), (2, 1, 1), (1, 3, 2), (4, 3, 3)])
def test_graph_edge_counts_and_neighbour_sets(n, k, z):
    g = lian_graph(n, k, z)
    assert g.num_edges == n * (k + z) * (k + n + z - 2)
    assert g.homogeneous.shape == (n * (k + z), k + n + z - 2)
    deg = {"bs-cc": k - 1, "ue": n - 1, "bs-cs": z, "bs-ss": z - 1, "tgt": n - 1, "bs-sc": k}
    assert {r: e.degree for r, e in g.edges.items()} == deg
    # brute force from the definitions (34)-(40), global indices: comm (n, k) -> n*K + k, sensing (n, z) -> NK + n*Z + z
    comm = {(a, b): a * k + b for a in range(n) for b in range(k)}
    sense = {(a, b): n * k + a * z + b for a in range(n) for b in range(z)}
    rule = {
        "bs-cc": lambda c, m: c in comm.values() and m in comm.values() and _bs(c, n, k, z) == _bs(m, n, k, z) and c != m,
        "ue": lambda c, m: c in comm.values() and m in comm.values() and _link(c, n, k, z) == _link(m, n, k, z) and c != m,
        "bs-cs": lambda c, m: c in comm.values() and m in sense.values() and _bs(c, n, k, z) == _bs(m, n, k, z),
        "bs-ss": lambda c, m: c in sense.values() and m in sense.values() and _bs(c, n, k, z) == _bs(m, n, k, z) and c != m,
        "tgt": lambda c, m: c in sense.values() and m in sense.values() and _link(c, n, k, z) == _link(m, n, k, z) and c != m,
        "bs-sc": lambda c, m: c in sense.values() and m in comm.values() and _bs(c, n, k, z) == _bs(m, n, k, z),
    }
    nodes = n * (k + z)
    union = set()
    for r, ok in rule.items():
        expected = {(c, m) for c in range(nodes) for m in range(nodes) if ok(c, m)}
        got = {tuple(e) for e in g.edge_list(r).T.tolist()}
        assert got == expected, r
        assert not (union & got)  # the six types are disjoint
        union |= got
    homo = {(c, m) for c in range(nodes) for m in g.homogeneous[c].tolist()}
    assert homo == union
    assert len(g.edge_types_of("s")) == (3 if z > 1 else 2) - (n == 1)


def _bs(v, n, k, z):
    return v // k if v < n * k else (v - n * k) // z


def _link(v, n, k, z):  # the user (comm node) or the target (sensing node) of node v
    return ("u", v % k) if v < n * k else ("t", (v - n * k) % z)


def test_graph_rejects_empty_types():
    with pytest.raises(ValueError, match="N, K, Z >= 1"):
        lian_graph(3, 5, 0)


# --- models ---------------------------------------------------------------------------------------


def test_paper_widths_and_architecture():
    assert paper_widths(16) == [32, 128, 128, 128, 256, 512, 256, 128, 32]
    full = config_for("lhgnn", "full")
    m = build_model(full)
    assert isinstance(m, LHGNN) and len(m.layers) == 9
    assert [layer.fout for layer in m.layers] == paper_widths(16)
    assert m.layers[0].f1["bs-cc"].in_features == 32  # the first layer maps 2L -> 2L
    assert isinstance(build_model(LianTrainConfig(kind="homognn", **SMALL)), HomoGNN)
    assert isinstance(build_model(LianTrainConfig(kind="cnn", **SMALL)), LianCNN)
    assert not hasattr(build_model(LianTrainConfig(kind="lhgnn-noatt", **SMALL)).layers[0], "f3")


@pytest.mark.parametrize("kind", [*GNN_KINDS, "cnn"])
def test_user_permutation(kind, data):
    model = _model(kind, seed=1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    W = _out(model, data.H_in, data.A_in, data.truth.p_max_w, data.noise_w)
    Wp = _out(model, data.H_in[..., perm], data.A_in, data.truth.p_max_w, data.noise_w)
    scale = W.abs().max()
    expected = torch.cat([W[..., :5][..., perm], W[..., 5:]], dim=-1)
    if kind == "cnn":  # flatten + FC: not equivariant (module docstring of isac.learning.lian)
        assert not torch.allclose(Wp, expected, atol=1e-3 * scale)
    else:
        torch.testing.assert_close(Wp, expected, rtol=0, atol=1e-5 * scale)
        assert not torch.allclose(W[..., 0], W[..., 1], atol=1e-3 * scale)


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_bs_permutation_permutes_gnn_outputs(kind, data):
    model = _model(kind, seed=2)
    perm = torch.tensor([2, 0, 1])
    p = torch.tensor([[0.1, 0.05, 0.02]], dtype=torch.float64).expand(len(data), 3)
    W = _out(model, data.H_in, data.A_in, p, data.noise_w)
    Wp = _out(model, data.H_in[:, perm], data.A_in[:, perm], p[:, perm], data.noise_w)
    torch.testing.assert_close(Wp, W[:, perm], rtol=0, atol=1e-5 * W.abs().max())


def test_tiny_trained_model_is_user_equivariant(tiny_ckpt, data):
    model = load_checkpoint(tiny_ckpt[0])[0]
    perm = torch.tensor([1, 2, 3, 4, 0])
    W = _out(model, data.H_in, data.A_in, data.truth.p_max_w, data.noise_w)
    Wp = _out(model, data.H_in[..., perm], data.A_in, data.truth.p_max_w, data.noise_w)
    torch.testing.assert_close(Wp[..., :5], W[..., :5][..., perm], rtol=0, atol=1e-5 * W.abs().max())


@pytest.mark.parametrize("kind", [*GNN_KINDS, "cnn"])
def test_per_bs_power_never_exceeds_budget(kind, data):
    model = _model(kind, seed=3)
    p = torch.tensor([[0.1, 0.01, 1.0]], dtype=torch.float64).expand(len(data), 3)
    for gain in (1e-3, 1.0, 1e3):  # tiny and huge inputs
        W = _out(model, data.H_in * gain, data.A_in, p, data.noise_w)
        power = (W.abs() ** 2).sum(dim=(-2, -1))
        assert bool((power <= p * (1 + 1e-12)).all())
        assert W.dtype == torch.complex128 and W.shape == (len(data), 3, 16, 6)


def test_power_normalisation_is_eq50():
    W = torch.randn(2, 3, 4, 2, dtype=torch.complex128)
    p_hat = (W.abs() ** 2).sum(dim=(-2, -1))
    p = torch.stack([p_hat[0] * 2.0, p_hat[1] * 0.5])  # sample 0 under budget (kept), sample 1 over (scaled)
    out = power_normalise(W, p)
    torch.testing.assert_close(out[0], W[0], rtol=1e-14, atol=0)
    torch.testing.assert_close((out[1].abs() ** 2).sum(dim=(-2, -1)), p[1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_two_targets_and_other_sizes(kind):
    model = _model(kind, seed=4)
    for n, k, z in [(3, 5, 2), (2, 3, 1), (4, 1, 2)]:
        H = torch.randn(2, n, 16, k, dtype=torch.complex128) * 1e-5
        A = torch.exp(1j * torch.rand(2, n, 16, z, dtype=torch.float64) * 6.28) / 4
        W = _out(model, H, A, 0.1, 2e-12)
        assert W.shape == (2, n, 16, k + z) and bool(torch.isfinite(torch.view_as_real(W)).all())


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("z", [1, 2])
def test_fused_layer_equals_the_equations(attention, z):
    from isac.learning.lian import HetLayer, _device_index

    torch.manual_seed(0)
    layer = HetLayer(8, 12, attention)
    graph = lian_graph(3, 4, z)
    x = {"c": torch.randn(2, 12, 8), "s": torch.randn(2, 3 * z, 8)}
    index = _device_index(graph, torch.device("cpu"))
    fused, ref = layer(x, graph, index), layer.forward_reference(x, graph, index)
    for t in ("c", "s"):
        torch.testing.assert_close(fused[t], ref[t], rtol=1e-5, atol=1e-6)


def test_cnn_refuses_other_sizes():
    model = _model("cnn")
    H = torch.randn(1, 3, 16, 4, dtype=torch.complex128)
    with pytest.raises(ValueError, match="only runs on its training sizes"):
        _out(model, H, torch.ones(1, 3, 16, 1, dtype=torch.complex128), 0.1, 1e-12)


@pytest.mark.parametrize("kind", [*GNN_KINDS, "cnn"])
def test_batched_equals_single(kind, data):
    model = _model(kind, seed=5)
    W = _out(model, data.H_in, data.A_in, data.truth.p_max_w, data.noise_w)
    for b in (0, 4):
        Wb = _out(model, data.H_in[b:b + 1], data.A_in[b:b + 1], data.truth.p_max_w[b:b + 1], data.noise_w)
        torch.testing.assert_close(Wb[0], W[b], rtol=1e-5, atol=1e-6 * W[b].abs().max())


def test_interference_projection_against_numpy():
    """Each beam against its own least-squares formula written with NumPy, one beam at a time."""
    import numpy as np

    from isac.learning.lian import interference_projection

    gen = torch.Generator().manual_seed(7)
    b, n, length, k, z = 2, 3, 4, 5, 2
    G = torch.randn(b, n, length, k, dtype=torch.complex128, generator=gen)
    W = torch.randn(b, n, length, k + z, dtype=torch.complex128, generator=gen)
    for mu in (0.7, 1e-9):
        out = interference_projection(W, G, torch.tensor(mu, dtype=torch.float64)).numpy()
        for i in range(b):
            Gi, Wi = G[i].reshape(n * length, k).numpy(), W[i].reshape(n * length, k + z).numpy()
            for s in range(k + z):
                others = [j for j in range(k) if j != s]  # a sensing beam (s >= K) avoids every user
                Go = Gi[:, others]
                coef = np.linalg.solve(Go.conj().T @ Go + mu * np.eye(len(others)), Go.conj().T @ Wi[:, s])
                np.testing.assert_allclose(out[i].reshape(n * length, k + z)[:, s], Wi[:, s] - Go @ coef,
                                           rtol=0, atol=1e-9)
                if mu < 1e-6:  # zero forcing: no leakage to the users the beam avoids
                    leak = np.abs(Go.conj().T @ out[i].reshape(n * length, k + z)[:, s]).max()
                    assert leak < 1e-7 * np.abs(Wi).max() * np.abs(Gi).max()


def test_rzf_model_starts_near_zero_forcing_and_keeps_nulls(data):
    """Untrained lhgnn-rzf: the most loaded BS at its budget, little leakage, rate near an independent RZF."""
    from isac.learning.lian import uniform_power_scale

    model = _model("lhgnn-rzf", seed=8)
    model.log_mu.data.fill_(math.log(1e-8))
    W = _out(model, data.H_in, data.A_in, data.truth.p_max_w, data.noise_w)
    power = (W.abs() ** 2).sum(dim=(-2, -1))
    torch.testing.assert_close(power.amax(1), data.truth.p_max_w.amax(1), rtol=1e-12, atol=0)
    Hs = data.H_in.reshape(len(data), -1, 5)
    G = (Hs.mH @ W.reshape(len(data), -1, 6)).abs() ** 2  # [B, K users, K+1 beams]
    off = G.clone()
    off[:, range(5), range(5)] = 0
    assert float((off.sum(-1) / G[:, range(5), range(5)]).max()) < 1e-6
    # independent reference: ZF by the pseudo-inverse, equal column norms, one common scale
    J = Hs @ torch.linalg.inv(Hs.mH @ Hs)
    J = (J / J.norm(dim=1, keepdim=True)).reshape(len(data), 3, 16, 5)
    ref = uniform_power_scale(torch.cat([J, torch.zeros_like(J[..., :1])], -1), data.truth.p_max_w)
    r_model = objective_terms_batch(data, W)
    r_ref = objective_terms_batch(data, ref)
    assert float((r_model / r_ref).min()) > 0.8


def objective_terms_batch(data, W):
    from isac.metrics.problems.coop_localization import batch_terms

    return batch_terms(data.truth, W)["sum_rate_bps_hz"]


# --- loss -----------------------------------------------------------------------------------------


def test_loss_matches_hand_computation(insts, data):
    model = _model("lhgnn", seed=6)
    cfg = LianTrainConfig(kind="lhgnn", speb_margin=0.05, **SMALL)
    epoch = 7
    with torch.no_grad():
        t = batch_loss(model, data, cfg, epoch)
        W = predict(model, data)
    for b, inst in enumerate(insts):
        ref = objective_terms(inst, W[b])
        rates = ref["rates_bps_hz"]
        gamma = inst.speb_max_m2
        hand = (-rates.sum() + 0.8 * epoch * max(0.0, float(ref["speb_m2"]) / (gamma * 0.95) - 1.0)
                + 0.5 * epoch * torch.clamp(0.05 - rates, min=0).sum())
        torch.testing.assert_close(t["loss"][b], hand.to(t["loss"].dtype), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(t["sum_rate"][b], ref["sum_rate_bps_hz"], rtol=1e-12, atol=0)
    # the rate hinge: rates below r cost rho2 per bit
    terms = {"rates_bps_hz": torch.tensor([[0.0, 1.0]], dtype=torch.float64),
             "speb_m2": torch.tensor([3.0], dtype=torch.float64)}
    out = lian_loss(terms, torch.tensor([2.0], dtype=torch.float64), epoch=2)
    assert math.isclose(float(out["loss"][0]), -1.0 + 1.6 * 0.5 + 1.0 * 0.05, rel_tol=1e-12)


def test_loss_reaches_every_used_parameter(data):
    model = _model("lhgnn", seed=7)
    batch_loss(model, data, LianTrainConfig(**SMALL), 1)["loss"].mean().backward()
    unused = {name for name, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0}
    # Z = 1: no BS-SS edges, and one BS-CS neighbour, so its attention weight is 1 whatever f3, f4 say
    assert unused and all("bs-ss" in name or ("bs-cs" in name and (".f3." in name or ".f4." in name))
                          for name in unused)


def test_few_steps_reduce_the_loss(data):
    model = _model("lhgnn", seed=8)
    cfg = LianTrainConfig(**SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = batch_loss(model, data, cfg, 1)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.5


# --- data, training, checkpoints ------------------------------------------------------------------


def test_splits_disjoint_and_robust_inputs():
    cfg = LianTrainConfig(n_train=10, n_val=5, n_test=5, csi_snr_db=[0, 30], position_error_m=[2, 3])
    s = split_seeds(cfg)
    assert s["train"].stop == s["val"].start and s["val"].stop == s["test"].start and s["train"].start > 10**9
    assert split_seeds(LianTrainConfig(seed=1))["train"].start != s["train"].start
    inst = make_instance(cfg, s["train"].start)
    assert inst.H_estimate is not None and inst.target_position_estimate_m is not None
    err = (inst.target_position_estimate_m - inst.target_position_m).abs()
    assert bool(((err >= 2) & (err < 3)).all())
    d = data_from_instances([inst])
    torch.testing.assert_close(d.truth.H[0], inst.H)  # the loss sees the truth ...
    torch.testing.assert_close(d.H_in[0], inst.H_estimate)  # ... the network the estimate
    assert not torch.allclose(d.H_in, d.truth.H)


def test_training_records_and_round_trips(tiny_ckpt, insts, data):
    path, payload = tiny_ckpt
    assert payload["data_version"] == DATA_VERSION and len(payload["history"]) == 2
    assert set(payload["test"]) >= {"sum_rate_bps_hz", "feasible_pct", "speb_ratio_mean"}
    assert payload["gamma_m2"] == pytest.approx(lian_preset(0).speb_max_m2)
    model, cfg, _ = load_checkpoint(path)
    assert cfg == LianTrainConfig(kind="lhgnn", **TINY)
    again = train(cfg, path.with_name("again.pt"), echo=None)  # deterministic under the seed
    for k, v in payload["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k
    assert again["history"] == [{**h, "time_s": g["time_s"]} for h, g in zip(payload["history"], again["history"])]
    scores = evaluate_model(model, data)
    W = predict(model, data)
    assert scores["sum_rate_bps_hz"] == pytest.approx(
        sum(evaluate(i, {"W": W[b].detach()})["sum_rate_bps_hz"] for b, i in enumerate(insts)) / len(insts))


def test_bad_checkpoints_raise_one_line(tmp_path, tiny_ckpt):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_checkpoint(bad)
    torch.save({"format": "isac-zhao-model/1"}, bad)
    with pytest.raises(CheckpointError, match="not an isac lian model"):
        read_checkpoint(bad)
    payload = torch.load(tiny_ckpt[0], weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if "head_c" not in k}
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(bad)


def test_cli_quick_train(tmp_path):
    from typer.testing import CliRunner

    from isac.cli import app

    out = tmp_path / "q.pt"
    res = CliRunner().invoke(app, ["train", "lian-homognn", "--quick", "--threads", "1", "--power-dbm", "10",
                                   "--csi-snr-db", "0,30", "--position-error", "0,7", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cfg = read_checkpoint(out)["config_obj"]
    assert (cfg.kind, cfg.power_dbm, cfg.csi_snr_db, cfg.position_error_m) == ("homognn", 10.0, [0.0, 30.0], [0.0, 7.0])
    res = CliRunner().invoke(app, ["train", "lian-lhgnn", "--position-error", "3"])
    assert res.exit_code != 0


# --- solvers --------------------------------------------------------------------------------------


def test_solver_statuses_agree_with_the_evaluator(tiny_ckpt, insts):
    path = tiny_ckpt[0]
    solver = get_solver("coop-localization", "lhgnn", {"checkpoint": str(path)})
    batch = solver.solve_batch(insts)
    for inst, res in zip(insts, batch):
        single = solver.solve(inst)
        feasible = evaluate(inst, res.solution)["feasible"]
        assert res.status == (Status.CONVERGED if feasible else Status.INFEASIBLE)
        assert single.status == res.status and res.solution["W"].shape == (3, 16, 6)
        torch.testing.assert_close(single.solution["W"], res.solution["W"], rtol=1e-5, atol=1e-7)
        assert single.info["checkpoint"] == path.name and single.info["parameters"] > 0
        assert res.time_s > 0 and "checkpoint_note" not in single.info


def test_solver_lookup_nearest_and_errors(tmp_path, tiny_ckpt):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / tiny_ckpt[0].name).write_bytes(tiny_ckpt[0].read_bytes())
    solver = get_solver("coop-localization", "lhgnn", {"models": str(folder)})
    res = solver.solve(lian_preset(0, p_max_dbm=25.0))
    assert res.info["checkpoint"] == tiny_ckpt[0].name and "nearest: 20 dBm" in res.info["checkpoint_note"]
    assert "checkpoint_note" not in solver.solve(lian_preset(1)).info
    with pytest.raises(OptionError, match="no trained cnn model"):
        get_solver("coop-localization", "cnn", {"models": str(folder)}).solve(lian_preset(0))
    with pytest.raises(OptionError, match="holds a lhgnn model"):
        get_solver("coop-localization", "homognn", {"checkpoint": str(tiny_ckpt[0])}).solve(lian_preset(0))
    with pytest.raises(OptionError, match="no such checkpoint"):
        get_solver("coop-localization", "lhgnn", {"checkpoint": str(folder / "none.pt")}).solve(lian_preset(0))


SHIPPED = sorted(WEIGHTS_DIR.glob("lian-*.pt"))


@pytest.mark.skipif(not SHIPPED, reason="no shipped lian weights")
def test_shipped_checkpoints():
    kinds = set()
    for path in SHIPPED:
        assert path.stat().st_size <= 10 * 2**20
        payload = read_checkpoint(path)
        cfg = payload["config_obj"]
        kinds.add(cfg.kind)
        assert path.name == ll_name(cfg) and payload["data_version"] == DATA_VERSION
        assert payload["test"]["n"] >= 100 and cfg.threads == 1
        load_checkpoint(path)
    assert kinds == {"lhgnn", "lhgnn-noatt", "homognn", "cnn", "lhgnn-rzf"}
    res = get_solver("coop-localization", "lhgnn").solve(lian_preset(0))  # default: the shipped 20 dBm model
    assert res.info["checkpoint"] == "lian-lhgnn-20dBm-g2.pt" and "checkpoint_note" not in res.info


def ll_name(cfg):
    from isac.learning.lian_train import checkpoint_name

    return checkpoint_name(cfg)


def test_solver_registry_names():
    from isac.solvers.registry import solvers_for

    avail = solvers_for("coop-localization")
    assert {"lhgnn", "lhgnn-noatt", "homognn", "cnn", "lhgnn-rzf"} <= set(avail)
    assert avail["lhgnn"] is ll.LianLhgnn and avail["lhgnn-rzf"] is ll.LianLhgnnRzf
    assert COMM_EDGE_TYPES == ("bs-cc", "ue", "bs-cs") and SENSE_EDGE_TYPES == ("bs-ss", "tgt", "bs-sc")


@pytest.mark.skipif(not (WEIGHTS_DIR / "lian-lhgnn-rzf-20dBm-g2.pt").is_file(), reason="no shipped lhgnn-rzf weights")
def test_shipped_rzf_model_against_pdpg_rechecked_independently():
    """Held-out draws at 20 dBm: the shipped lhgnn-rzf within 0.85x pdpg's mean sum rate, its beams inside
    every budget and mostly meeting gamma -- rates, SPEB and power recomputed by benchmarks/lian_heldout.py."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lian_heldout.py"
    spec = importlib.util.spec_from_file_location("lian_heldout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    insts = [lian_preset(910_000 + i) for i in range(8)]
    rzf = get_solver("coop-localization", "lhgnn-rzf").solve_batch(insts)
    ref = get_solver("coop-localization", "pdpg").solve_batch(insts)
    assert rzf[0].info["checkpoint"] == "lian-lhgnn-rzf-20dBm-g2.pt"
    checked = [module.independent(inst, r.solution["W"].numpy()) for inst, r in zip(insts, rzf)]
    assert all(power_ok for _, _, power_ok in checked)
    meets = [speb <= inst.speb_max_m2 * (1 + 1e-4) for inst, (_, speb, _) in zip(insts, checked)]
    assert [r.feasible for r in rzf] == meets and sum(meets) >= 6
    rate_rzf = sum(rate for rate, _, _ in checked) / len(insts)
    rate_pdpg = sum(module.independent(inst, r.solution["W"].numpy())[0] for inst, r in zip(insts, ref)) / len(insts)
    assert rate_rzf >= 0.85 * rate_pdpg


def test_speb_function_equals_the_engine(insts):
    from isac.metrics.bounds.lian import lian_speb, lian_speb_function
    from isac.metrics.problems.coop_localization import CoopBatch

    view = CoopBatch.from_instances(insts, estimates=True)
    W = torch.randn(len(insts), 3, 16, 6, dtype=torch.complex128, generator=torch.Generator().manual_seed(3)) * 0.05
    for model in ("exact", "eq20"):
        f = lian_speb_function(view.array, view.bs_positions_m, view.target_position_m, view.alpha,
                               view.snapshots, view.noise_sense_w, model=model)
        ref = lian_speb(view.array, view.bs_positions_m, view.target_position_m, view.alpha, W, view.snapshots,
                        view.noise_sense_w, model=model)
        torch.testing.assert_close(f(W), ref, rtol=1e-12, atol=0)


@pytest.mark.skipif(not (WEIGHTS_DIR / "lian-lhgnn-rzf-20dBm-g2.pt").is_file(), reason="no shipped lhgnn-rzf weights")
def test_rzf_speb_guard():
    """The guard's beams meet gamma (evaluator) with t in (0, 1] where the plain output does, at a rate
    no lower; an instance no t can fix (gamma just above the floor) gets the plain output, INFEASIBLE."""
    insts = [lian_preset(920_000 + i) for i in range(6)]
    guarded = get_solver("coop-localization", "lhgnn-rzf").solve_batch(insts)
    plain = get_solver("coop-localization", "lhgnn-rzf", {"guard": False}).solve_batch(insts)
    for g, p in zip(guarded, plain):
        assert g.status == Status.CONVERGED and g.feasible and g.metrics["speb_over_gamma"] <= 1 - 1e-3 + 1e-9
        assert "guard_t" not in p.info and p.options["guard"] is False
        if p.feasible:
            assert 0 < g.info["guard_t"] <= 1.0
            assert g.metrics["sum_rate_bps_hz"] >= p.metrics["sum_rate_bps_hz"] - 1e-9
    tight = lian_preset(920_000, gamma_over_floor=1.01)
    res = get_solver("coop-localization", "lhgnn-rzf").solve(tight)
    assert res.status == Status.INFEASIBLE and res.info["guard_t"] == 1.0
