"""003 Algorithm 1 (sca) and Prop. 5 (sca-lowdim): gradient, monotonicity, optimal structure, batching."""

import math

import pytest
import torch

from helpers import assert_close, autograd_grad
from isac.metrics.problems.crlb_sumrate import objective_terms
from isac.scenario.instances.crlb_sumrate import CrlbSumrateInstance, fang_preset, small_preset
from isac.solvers.base import Status
from isac.solvers.fang_sca import SCA, SCALowDim, _Batch, objective_and_gradient
from isac.solvers.registry import get_solver
from isac.tensors import hermitian


def _random_w(inst, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(inst.num_tx, inst.num_streams, dtype=torch.complex128, generator=g)
    return W * math.sqrt(inst.p_max_w) / torch.linalg.matrix_norm(W)


@pytest.mark.parametrize("ns", [0, 3])
def test_closed_form_gradient_matches_autograd(ns):
    inst = fang_preset(1, tx_shape=(2, 3), rx_shape=(2, 2), num_users=2, num_targets=2, num_sensing_streams=ns,
                       delta_c=0.7, delta_s=0.3)
    W = _random_w(inst, 1)
    parts = objective_and_gradient(_Batch.stack([inst]), W[None])
    ref = autograd_grad(lambda w: objective_terms(inst, w)["objective"], W)
    assert_close(parts["grad"][0], ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()), what="grad (32)")
    assert math.isclose(float(parts["objective"][0]), float(objective_terms(inst, W)["objective"]), rel_tol=1e-12)


@pytest.mark.parametrize("seed,step", [(0, "lbfgs"), (1, "lbfgs"), (2, "lbfgs"), (0, "paper"), (1, "paper")])
def test_objective_never_decreases(seed, step):
    inst = fang_preset(seed)
    res = SCA(max_iterations=300, tolerance=1e-12, step=step).solve(inst)
    obj = [t["objective"] for t in res.trace]
    drops = [b - a for a, b in zip(obj, obj[1:]) if b < a - 1e-10 * abs(a)]
    assert not drops, drops[:3]
    assert res.feasible and math.isclose(res.metrics["power_w"], inst.p_max_w, rel_tol=1e-10)


def test_converged_point_satisfies_theorem_1():
    inst = fang_preset(2)
    res = SCA(max_iterations=20000, tolerance=1e-13).solve(inst)
    W = res.solution["W"]
    k = inst.num_users
    parts = objective_and_gradient(_Batch.stack([inst]), W[None])
    grad = parts["grad"][0]
    mu = float(torch.real(torch.trace(hermitian(W) @ grad))) / (2 * inst.p_max_w)
    assert mu > 0
    # (36): grad f - 2 mu W = 0 at a stationary point on the sphere
    assert float(torch.linalg.matrix_norm(grad - 2 * mu * W) / torch.linalg.matrix_norm(grad)) < 1e-3
    # (37), written out with Sigma_1, Sigma_2 and Q
    H, Q = inst.H, parts["Q"][0]
    hw = hermitian(H) @ W
    gains = hw.abs() ** 2
    total = gains.sum(-1) + inst.noise_comm_w
    signal = torch.diagonal(gains[:, :k])
    xi = signal / (total - signal)
    eta = xi / torch.diagonal(hw[:, :k])
    beta = xi / total
    M = mu * torch.eye(inst.num_tx, dtype=W.dtype) + inst.delta_c * (H * beta) @ hermitian(H) - inst.delta_s * Q
    rhs = inst.delta_c * H * eta.conj()
    wc_res = torch.linalg.matrix_norm(M @ W[:, :k] - rhs) / torch.linalg.matrix_norm(rhs)
    ws = W[:, k:]
    ws_res = torch.linalg.matrix_norm((inst.delta_s * Q - inst.delta_c * (H * beta) @ hermitian(H)) @ ws - mu * ws)
    ws_rel = ws_res / (mu * torch.linalg.matrix_norm(W))  # W_s may be ~0: judge on the scale of W
    print("theorem-1 residuals", float(wc_res), float(ws_rel))
    assert float(wc_res) < 1e-6
    assert float(ws_rel) < 1e-4


@pytest.mark.parametrize("seed", [4, 6])
def test_lemma_5_few_sensing_streams_reach_the_full_crlb(seed):
    """delta_c = 0: the CRLB with N_s = M and N_s = 3M equals the CRLB with N_s = N_t (Lemma 5 / Fig. 4)."""
    kw = dict(tx_shape=(3, 3), rx_shape=(3, 3), num_users=2, num_targets=2, delta_c=0.0, delta_s=1.0)
    opts = dict(max_iterations=20000, tolerance=1e-12)
    full = SCA(**opts).solve(fang_preset(seed, num_sensing_streams=9, **kw)).metrics["crlb_trace"]
    for ns in (2, 6):
        few = SCA(**opts).solve(fang_preset(seed, num_sensing_streams=ns, **kw)).metrics["crlb_trace"]
        assert few == pytest.approx(full, rel=1e-6), ns


def test_batched_equals_one_by_one():
    insts = [small_preset(s) for s in range(4)]
    solver = SCA(max_iterations=200, tolerance=1e-10)
    batch = solver.solve_batch(insts)
    for inst, rb in zip(insts, batch):
        ra = solver.solve(inst)
        assert ra.status == rb.status and ra.iterations == rb.iterations
        assert_close(rb.solution["W"], ra.solution["W"], rtol=1e-9, atol=1e-12, what="W")
        assert rb.metrics["objective"] == pytest.approx(ra.metrics["objective"], rel=1e-10)


def test_lowdim_reaches_the_full_dimensional_objective():
    for seed in (1,):
        inst = fang_preset(seed)
        full = SCA(tolerance=1e-10, max_iterations=5000).solve(inst)
        low = SCALowDim(tolerance=1e-10, max_iterations=5000).solve(inst)
        assert low.feasible and low.status is Status.CONVERGED
        assert low.metrics["objective"] == pytest.approx(full.metrics["objective"], rel=1e-5, abs=1e-6)


def test_per_antenna_projection():
    inst = fang_preset(0)
    res = SCA(power_constraint="per-antenna", max_iterations=300).solve(inst)
    W = res.solution["W"]
    rows = (W.abs() ** 2).sum(-1)
    assert_close(rows, torch.full_like(rows, inst.p_max_w / inst.num_tx), rtol=1e-12, what="row powers")
    assert res.feasible


def test_uses_w0_and_reports_max_iterations():
    inst = small_preset(3)
    W0 = _random_w(inst, 9)
    inst0 = CrlbSumrateInstance(**{**inst.__dict__, "W0": W0})
    for step in ("lbfgs", "paper"):
        res = SCA(max_iterations=3, step=step, start_sensing_scale=1.0).solve(inst0)
        assert res.status is Status.MAX_ITERATIONS and res.iterations == 3
        assert res.trace[0]["objective"] == pytest.approx(float(objective_terms(inst, W0)["objective"]), rel=1e-12)
    # the default L-BFGS start: W0 with its sensing block scaled by 1e-2, back at full power
    damped = W0.clone()
    damped[:, inst.num_users:] *= 1e-2
    damped *= math.sqrt(inst.p_max_w) / torch.linalg.matrix_norm(damped)
    res = SCA(max_iterations=3).solve(inst0)
    assert res.trace[0]["objective"] == pytest.approx(float(objective_terms(inst, damped)["objective"]), rel=1e-12)


def test_beats_the_baselines_and_is_deterministic():
    inst = fang_preset(5)
    a = get_solver("crlb-sumrate", "sca").solve(inst)
    b = get_solver("crlb-sumrate", "sca").solve(inst)
    assert torch.equal(a.solution["W"], b.solution["W"])
    for name in ("mrt", "zf"):
        base = get_solver("crlb-sumrate", name).solve(inst)
        assert a.metrics["objective"] >= base.metrics["objective"]


def test_bad_options():
    from isac.solvers.base import OptionError
    with pytest.raises(OptionError):
        get_solver("crlb-sumrate", "sca", {"power_constraint": "sometimes"})
    with pytest.raises(OptionError):
        get_solver("crlb-sumrate", "sca", {"max_iterations": "0"})
    with pytest.raises(OptionError):
        get_solver("crlb-sumrate", "sca-lowdim", {"power_constraint": "per-antenna"})
    with pytest.raises(OptionError, match="not a torch device"):
        get_solver("crlb-sumrate", "sca", {"device": "abacus"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    from isac.solvers.base import OptionError
    with pytest.raises(OptionError, match="CUDA is not available"):
        SCA(device="cuda").solve_batch([small_preset(0)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [SCA, SCALowDim])
def test_gpu_batch_equals_cpu(cls):
    insts = [small_preset(s) for s in range(3)]
    cpu = cls(max_iterations=200, tolerance=1e-10).solve_batch(insts)
    gpu = cls(max_iterations=200, tolerance=1e-10, device="cuda").solve_batch(insts)
    for a, b in zip(cpu, gpu):
        assert b.solution["W"].device.type == "cpu"
        assert a.status == b.status
        assert b.metrics["objective"] == pytest.approx(a.metrics["objective"], rel=1e-8)


def test_adaptive_step_is_monotone_and_reaches_the_same_point():
    inst = fang_preset(2)
    paper = SCA(step="paper", tolerance=1e-10, max_iterations=5000).solve(inst)
    fast = SCA(step="adaptive", tolerance=1e-10, max_iterations=5000).solve(inst)
    obj = [t["objective"] for t in fast.trace]
    assert all(b >= a - 1e-10 * abs(a) for a, b in zip(obj, obj[1:]))
    assert fast.status is Status.CONVERGED
    assert fast.metrics["objective"] == pytest.approx(paper.metrics["objective"], rel=1e-6)
