"""``crlb-sumrate`` (003): instance files, evaluator against an independent numpy implementation."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from helpers import assert_close, autograd_grad, central_difference_grad
from isac.metrics.evaluate import evaluate
from isac.metrics.problems.crlb_sumrate import objective_terms
from isac.scenario.instances.crlb_sumrate import CrlbSumrateInstance, fang_preset, small_preset
from isac.scenario.io import InstanceError
from isac.scenario.problems import instance_from_dict, load_instance, make_preset, save_instance
from isac.solvers.registry import get_solver


# --- an independent implementation of 003's metrics (numpy, straight from the text) ---------------

def _np_steer(nh, nv, th, ph, order):
    ih, iv = np.arange(nh), np.arange(nv)
    ah = np.exp(1j * np.pi * ih * np.sin(th) * np.sin(ph)) / np.sqrt(nh)
    av = np.exp(1j * np.pi * iv * np.cos(ph)) / np.sqrt(nv)
    dah_t = 1j * np.pi * ih * np.cos(th) * np.sin(ph) * ah
    dah_p = 1j * np.pi * ih * np.sin(th) * np.cos(ph) * ah
    dav_p = -1j * np.pi * iv * np.sin(ph) * av
    k = (lambda x, y: np.kron(x, y)) if order == "first-major" else (lambda x, y: np.kron(y, x))
    return k(ah, av), k(dah_t, av), k(dah_p, av) + k(ah, dav_p)


def reference_metrics(obj, W):
    """Rates (nats), tr(F^-1) and objective of 003 from a parsed instance dict and W (numpy)."""
    p = obj["params"]
    order = p.get("element_order", "first-major")
    H = np.array(obj["H"]["re"]) + 1j * np.array(obj["H"]["im"])
    alpha = np.array(obj["alpha"]["re"]) + 1j * np.array(obj["alpha"]["im"])
    th, ph = np.array(obj["theta_rad"]), np.array(obj["phi_rad"])
    s2c = 10 ** (p["noise_comm_dbm"] / 10) / 1000
    s2s = 10 ** (p["noise_sense_dbm"] / 10) / 1000
    K, M, L = H.shape[1], len(alpha), p["snapshots"]
    rates = []
    for k in range(K):
        g = np.abs(H[:, k].conj() @ W) ** 2
        rates.append(np.log(1 + g[k] / (g.sum() - g[k] + s2c)))
    R = W @ W.conj().T
    dG = []
    for which in ("t", "p", "re", "im"):
        for m in range(M):
            a, at, ap = _np_steer(*p["tx_shape"], th[m], ph[m], order)
            b, bt, bp = _np_steer(*p["rx_shape"], th[m], ph[m], order)
            if which == "t":
                dG.append(alpha[m] * (np.outer(bt, a.conj()) + np.outer(b, at.conj())))
            elif which == "p":
                dG.append(alpha[m] * (np.outer(bp, a.conj()) + np.outer(b, ap.conj())))
            elif which == "re":
                dG.append(np.outer(b, a.conj()))
            else:
                dG.append(1j * np.outer(b, a.conj()))
    F = np.array([[np.real(np.trace(dp @ R @ dq.conj().T)) for dq in dG] for dp in dG]) * 2 * L / s2s
    crlb = float(np.trace(np.linalg.inv(F)))
    sr = float(np.sum(rates))
    return {"sum_rate_nats": sr, "crlb_trace": crlb,
            "objective": p["delta_c"] * sr - p["delta_s"] * crlb, "power_w": float(np.real(np.trace(R)))}


def _random_w(inst, seed):
    rng = np.random.default_rng(seed)
    shape = (inst.num_tx, inst.num_streams)
    W = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return W * math.sqrt(inst.p_max_w) / np.linalg.norm(W)


@pytest.mark.parametrize("order", ["first-major", "second-major"])
@pytest.mark.parametrize("seed", [0, 1])
def test_evaluator_matches_independent_implementation(seed, order):
    inst = fang_preset(seed, num_targets=2 + seed)
    obj = json.loads(json.dumps(inst.to_dict()))
    obj["params"]["element_order"] = order
    inst = instance_from_dict(obj)
    W = _random_w(inst, seed)
    got = evaluate(inst, {"W": torch.as_tensor(W)})
    ref = reference_metrics(obj, W)
    for key, val in ref.items():
        assert math.isclose(got[key], val, rel_tol=1e-8), (key, got[key], val)
    assert got["feasible"] is True


def test_objective_gradient_matches_central_differences():
    inst = small_preset(3)
    W = torch.as_tensor(_random_w(inst, 3))
    f = lambda w: objective_terms(inst, w)["objective"]  # noqa: E731
    assert_close(autograd_grad(f, W), central_difference_grad(f, W), rtol=1e-5, what="grad objective")


def test_metrics_invariant_to_common_phase_of_each_beam():
    inst = small_preset(4)
    W = torch.as_tensor(_random_w(inst, 4))
    rot = torch.exp(1j * torch.linspace(0, 5, inst.num_streams, dtype=torch.float64))
    a, b = evaluate(inst, {"W": W}), evaluate(inst, {"W": W * rot})
    for key in ("sum_rate_nats", "crlb_trace", "objective", "power_w"):
        assert math.isclose(a[key], b[key], rel_tol=1e-10), key


def test_batched_objective_equals_looped():
    inst = small_preset(5)
    Ws = torch.stack([torch.as_tensor(_random_w(inst, s)) for s in range(4)])
    batch = objective_terms(inst, Ws)["objective"]
    for i in range(4):
        assert_close(batch[i], objective_terms(inst, Ws[i])["objective"], rtol=1e-12, what="batch")


def test_json_round_trip_is_exact(tmp_path):
    inst = fang_preset(7)
    inst = CrlbSumrateInstance(**{**inst.__dict__, "W0": torch.as_tensor(_random_w(inst, 7))})
    path = tmp_path / "i.json"
    save_instance(path, inst)
    back = load_instance(path, "crlb-sumrate")
    for name in ("H", "alpha", "theta_rad", "phi_rad", "W0"):
        assert torch.equal(getattr(inst, name), getattr(back, name)), name
    assert back.to_dict() == json.loads(json.dumps(inst.to_dict()))


def test_presets_are_deterministic_and_seed_dependent():
    a, b, c = make_preset("crlb-sumrate", "fang", 11), make_preset("crlb-sumrate", "fang", 11), fang_preset(12)
    assert torch.equal(a.H, b.H) and not torch.equal(a.H, c.H)
    assert a.snapshots == 30 and a.tx_shape == (4, 4) and a.rx_shape == (5, 4) and a.num_streams == 4 + 16


def _base():
    return json.loads(json.dumps(small_preset(0).to_dict()))


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda o: o.update(extra=1), "extra"),
        (lambda o: o["params"].update(bogus=2), "bogus"),
        (lambda o: o["params"].pop("snapshots"), "snapshots"),
        (lambda o: o["H"]["re"].pop(), "H"),
        (lambda o: o["H"]["re"][0].__setitem__(0, float("nan")), "H"),
        (lambda o: o["theta_rad"].__setitem__(0, float("inf")), "theta_rad"),
        (lambda o: o["params"].update(snapshots=-3), "snapshots"),
        (lambda o: o["params"].update(delta_c=-1.0), "delta_c"),
        (lambda o: o["params"].update(tx_shape=[2]), "tx_shape"),
        (lambda o: o.update(alpha={"re": [0.0], "im": [0.0]}), "alpha"),
        (lambda o: o.update(problem="beampattern"), "problem"),
        (lambda o: o["params"].update(p_max_dbm="ten"), "p_max_dbm"),
        (lambda o: o.update(W0={"re": [[1.0]], "im": [[0.0]]}), "W0"),
    ],
)
def test_bad_instance_gives_one_line_error_naming_the_key(mutate, key):
    obj = _base()
    mutate(obj)
    with pytest.raises(InstanceError) as e:
        instance_from_dict(copy.deepcopy(obj), "crlb-sumrate")
    msg = str(e.value)
    assert key in msg and "\n" not in msg, msg


def test_mrt_baseline_full_power_and_matches_reference():
    inst = fang_preset(2)
    res = get_solver("crlb-sumrate", "mrt").solve(inst)
    assert res.status.value == "CONVERGED" and res.feasible
    assert math.isclose(res.metrics["power_w"], inst.p_max_w, rel_tol=1e-12)
    ref = reference_metrics(json.loads(json.dumps(inst.to_dict())), res.solution["W"].numpy())
    assert math.isclose(res.metrics["objective"], ref["objective"], rel_tol=1e-8)


def test_over_power_point_is_reported_infeasible():
    inst = small_preset(1)
    W = torch.as_tensor(_random_w(inst, 1)) * 1.01
    assert evaluate(inst, {"W": W})["feasible"] is False
