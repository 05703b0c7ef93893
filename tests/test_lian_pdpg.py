"""pdpg (002, coop-localization): feasibility, batching, determinism, the binding SPEB constraint, baselines,
statuses, options, and `bench lian` on one tiny case."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from isac.metrics.bounds.lian import lian_speb
from isac.metrics.evaluate import evaluate
from isac.metrics.problems.coop_localization import CoopBatch, batch_terms, objective_terms
from isac.scenario.instances.coop_localization import lian_preset, small_preset
from isac.solvers.base import OptionError, Status
from isac.solvers.registry import default_solver, get_solver

HAVE_FLOOR = importlib.util.find_spec("isac.metrics.bounds.lian_floor") is not None
needs_floor = pytest.mark.skipif(not HAVE_FLOOR, reason="isac.metrics.bounds.lian_floor not there yet")
FAST = {"max_iterations": 80}  # enough for feasibility; quality tests use more


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def pdpg(**options):
    return get_solver("coop-localization", "pdpg", options)


def _check_feasible_independently(inst, W):
    """Per-BS power and SPEB recomputed from the beams with the engine, on the true channels and target."""
    power = (W.abs() ** 2).sum(dim=(-2, -1))
    assert bool((power <= inst.p_max_w * (1 + 1e-9)).all())
    speb = float(lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, W, inst.snapshots,
                           inst.noise_sense_w))
    assert speb <= inst.speb_max_m2 * (1 + 1e-9)


def _mrt_equal_power(inst) -> torch.Tensor:
    """Per-BS MRT user beams, each BS's budget split equally over the K users, no sensing power."""
    n, length, k = inst.H.shape
    W = torch.zeros(n, length, inst.num_streams, dtype=torch.complex128)
    dirs = inst.H / torch.linalg.vector_norm(inst.H, dim=1, keepdim=True)
    W[:, :, :k] = dirs * torch.sqrt(inst.p_max_w / k)[:, None, None]
    return W


def _zf_equal_power(inst) -> torch.Tensor:
    """Joint zero-forcing user beams, scaled so that the most loaded BS meets its budget."""
    n, length, k = inst.H.shape
    Hs = inst.H.reshape(n * length, k)
    Z = Hs @ torch.linalg.inv(Hs.conj().T @ Hs)
    Z = Z / torch.linalg.vector_norm(Z, dim=0, keepdim=True)
    Wu = Z.reshape(n, length, k)
    per_bs = (Wu.abs() ** 2).sum(dim=(-2, -1))
    Wu = Wu * torch.sqrt((inst.p_max_w / per_bs).min())
    W = torch.zeros(n, length, inst.num_streams, dtype=torch.complex128)
    W[:, :, :k] = Wu
    return W


def test_fast_speb_and_rates_match_the_metrics():
    from isac.solvers.lian_pdpg import _plan, _terms

    g = torch.Generator().manual_seed(3)
    for insts in ([lian_preset(s) for s in range(2)], [small_preset(s, p_max_dbm=p) for s, p in ((0, 10.0), (1, 30.0))]):
        n, length, k = insts[0].H.shape
        shape = (len(insts), 5, n, length, k + 1)
        V = torch.complex(torch.randn(shape, generator=g, dtype=torch.float64),
                          torch.randn(shape, generator=g, dtype=torch.float64)) * 0.2
        plan = _plan(insts, 0.0)
        rate, speb = _terms(plan, V)
        t = batch_terms(CoopBatch.from_instances(insts, estimates=True), V * plan.sqrt_p)
        assert torch.allclose(rate, t["sum_rate_bps_hz"], rtol=1e-10, atol=1e-10)
        assert torch.allclose(speb, t["speb_m2"], rtol=1e-9, atol=0)


@pytest.mark.parametrize("p_dbm", [10.0, 30.0])
def test_feasible_on_several_instances_and_powers(p_dbm):
    insts = [small_preset(s, p_max_dbm=p_dbm, gamma_over_floor=gof) for s, gof in ((0, 2.0), (1, 5.0), (2, 1.5))]
    for inst, res in zip(insts, pdpg(**FAST).solve_batch(insts)):
        assert res.status in (Status.CONVERGED, Status.MAX_ITERATIONS), res.message
        assert res.feasible and res.metrics["speb_feasible"] and res.metrics["power_feasible"]
        _check_feasible_independently(inst, res.solution["W"])
        assert 0 < res.info["speb_over_gamma"] <= 1 - 1e-4


def test_feasible_on_lian_at_20dbm():
    inst = lian_preset(1)
    res = pdpg(max_iterations=150).solve(inst)
    assert res.feasible, res.message
    _check_feasible_independently(inst, res.solution["W"])
    # the default rule on the result's own metrics: evaluate() agrees with the Result
    assert evaluate(inst, res.solution)["sum_rate_bps_hz"] == pytest.approx(res.metrics["sum_rate_bps_hz"], rel=1e-12)


def test_single_equals_batched():
    # different powers and thresholds; the unconstrained one stops early, so the batch shrinks on the way
    insts = [lian_preset(0), lian_preset(1, p_max_dbm=30.0), lian_preset(2, gamma_over_floor=1e6, p_max_dbm=10.0)]
    solver = pdpg(max_iterations=150, starts=7)
    batched = solver.solve_batch(insts)
    for inst, rb in zip(insts, batched):
        rs = solver.solve(inst)
        assert rs.status == rb.status and rs.iterations == rb.iterations
        assert rs.info["best_start"] == rb.info["best_start"]
        assert torch.allclose(rs.solution["W"], rb.solution["W"], rtol=0, atol=1e-9 * float(rs.solution["W"].abs().max()))
        assert rs.metrics["sum_rate_bps_hz"] == pytest.approx(rb.metrics["sum_rate_bps_hz"], abs=1e-9)
        assert rb.timings["batched"] == 1.0
    assert batched[2].status is Status.CONVERGED and batched[2].iterations < 150


def test_deterministic_under_a_seed():
    from isac.solvers.lian_pdpg import STRUCTURED_STARTS, initial_points

    inst = small_preset(4)
    a = pdpg(starts=8, seed=5, **FAST).solve(inst)
    b = pdpg(starts=8, seed=5, **FAST).solve(inst)
    assert torch.equal(a.solution["W"], b.solution["W"]) and a.trace == b.trace
    s0, s1 = initial_points(inst, 8, 0), initial_points(inst, 8, 1)
    m = len(STRUCTURED_STARTS)
    assert torch.equal(s0[:m], s1[:m]) and not torch.allclose(s0[m:], s1[m:])
    # the random starts do not touch the global generator
    torch.manual_seed(0)
    x = torch.rand(1)
    torch.manual_seed(0)
    initial_points(inst, 8, 3)
    assert torch.equal(torch.rand(1), x)


@needs_floor
def test_constraint_binds_at_twice_the_floor():
    from isac.metrics.bounds.lian_floor import speb_floor_m2

    base = lian_preset(0)
    floor = speb_floor_m2(base)
    assert base.speb_max_m2 == pytest.approx(2 * floor, rel=1e-9)
    solver = pdpg(max_iterations=200)
    tight = solver.solve(base)
    free = solver.solve(base.with_params(speb_max_m2=1e6 * floor))
    assert tight.feasible and free.feasible
    assert tight.metrics["sum_rate_bps_hz"] < free.metrics["sum_rate_bps_hz"] - 0.5
    assert tight.metrics["speb_m2"] > 0.99 * tight.metrics["speb_max_m2"]  # on the boundary: (32c) is active
    assert free.metrics["speb_m2"] < 1e-3 * free.metrics["speb_max_m2"]  # far inside: inactive


def test_unconstrained_beats_simple_baselines():
    for inst in (lian_preset(2, gamma_over_floor=1e6), small_preset(3, p_max_dbm=10.0, gamma_over_floor=1e6)):
        res = pdpg(max_iterations=150).solve(inst)
        assert res.feasible
        mrt = float(objective_terms(inst, _mrt_equal_power(inst))["sum_rate_bps_hz"])
        zf = float(objective_terms(inst, _zf_equal_power(inst))["sum_rate_bps_hz"])
        assert res.metrics["sum_rate_bps_hz"] >= max(mrt, zf)
        assert res.info["lambda"] == 0.0


def test_w0_is_the_first_start():
    inst = small_preset(5, gamma_over_floor=1e6)
    w0 = _zf_equal_power(inst)
    res = pdpg(max_iterations=1, starts=1).solve(inst.with_params(W0=w0))
    assert res.metrics["sum_rate_bps_hz"] == pytest.approx(float(objective_terms(inst, w0)["sum_rate_bps_hz"]),
                                                           rel=1e-12)


def test_never_converged_when_infeasible():
    # gamma barely above the floor and one iteration: no feasible point, hence no point at all
    inst = small_preset(0, gamma_over_floor=1.001)
    res = pdpg(max_iterations=1).solve(inst)
    assert res.status is Status.INFEASIBLE and not res.solution and not res.feasible
    # planning on estimates: the point meets gamma on the solver's view; on the truth it may not, and then it
    # is INFEASIBLE, never CONVERGED / MAX_ITERATIONS
    robust = [small_preset(s, position_error_range_m=(2.0, 3.0), csi_snr_db=10.0) for s in range(3)]
    for r in pdpg(**FAST).solve_batch(robust):
        assert r.feasible == (r.status in (Status.CONVERGED, Status.MAX_ITERATIONS))


@needs_floor
def test_infeasible_below_the_floor():
    from isac.metrics.bounds.lian_floor import speb_floor_m2

    inst = small_preset(1)
    floor = speb_floor_m2(inst)
    low = inst.with_params(speb_max_m2=0.5 * floor)
    for res in (pdpg().solve(low), pdpg().solve_batch([low, inst])[0]):
        assert res.status is Status.INFEASIBLE and res.solution == {} and res.iterations == 0
        assert "floor" in res.message and "gamma" in res.message
    assert pdpg(**FAST).solve_batch([low, inst])[1].feasible


def test_eq20_model_uses_the_engine():
    inst = small_preset(2, speb_model="eq20", gamma_over_floor=3.0)
    res = pdpg(max_iterations=40).solve(inst)
    assert res.feasible, res.message


def test_info_trace_and_default():
    inst = small_preset(6)
    res = pdpg(**FAST).solve(inst)
    assert set(res.info) >= {"starts", "best_start", "lambda", "speb_over_gamma"}
    assert res.info["starts"] == 8 and 0 <= res.info["best_start"] < 8
    assert len(res.trace) == res.iterations and {"objective", "speb_m2", "speb_over_gamma"} <= set(res.trace[0])
    assert max(t["objective"] for t in res.trace
               if t["speb_over_gamma"] <= 1 - 1e-4) == pytest.approx(res.metrics["sum_rate_bps_hz"], rel=1e-9)
    assert default_solver("coop-localization") == "pdpg"


@pytest.mark.parametrize("options", [{"starts": "0"}, {"nope": 1}, {"memory": "0"}, {"starts": "two"},
                                     {"margin": "-0.1"}, {"max_iterations": "0"}, {"tolerance": "2"}])
def test_bad_options_are_one_line_errors(options):
    with pytest.raises(OptionError) as e:
        pdpg(**options)
    assert "\n" not in str(e.value)


def test_solve_batch_needs_equal_shapes():
    with pytest.raises(OptionError):
        pdpg().solve_batch([small_preset(0), lian_preset(0)])
    assert pdpg().solve_batch([]) == []


def test_bench_lian_on_a_tiny_case(tmp_path):
    from isac.experiments.bench import write_report
    from isac.experiments.bench_lian import LIAN_COLUMNS, bench_lian

    rows = bench_lian(powers_dbm=(20.0,), instances=1, methods=("pdpg",), options={"pdpg": {"max_iterations": 20}},
                      echo=lambda _: None)
    assert [(r["method"], r["mode"]) for r in rows] == [("pdpg", "single"), ("pdpg", "batched")]
    for r in rows:
        assert r["instances"] == 1 and r["time_s"] > 0 and r["meets_gamma"] in (0.0, 1.0)
        assert r["sum_rate_bps_hz"] is None or math.isfinite(r["sum_rate_bps_hz"])
    assert rows[0]["sum_rate_bps_hz"] == pytest.approx(rows[1]["sum_rate_bps_hz"], abs=1e-9)
    path = write_report(rows, tmp_path, "t", LIAN_COLUMNS)
    assert "pdpg" in path.read_text()
