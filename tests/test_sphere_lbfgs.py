"""The L-BFGS step of 003's sca (default): its real-arithmetic objective, the optimiser, batching."""

import math

import pytest
import torch

from helpers import assert_close
from isac.scenario.instances.crlb_sumrate import fang_preset, small_preset
from isac.solvers.base import Status
from isac.solvers.fang_sca import SCA, SCALowDim, _Batch, _RealProblem, initial_point, objective_and_gradient
from isac.solvers.sphere_lbfgs import PowerSphere, lbfgs_ascent


def _real(W):
    return torch.cat([W.real, W.imag], -2).flatten(-2)


@pytest.mark.parametrize("lowdim", [False, True])
def test_real_problem_equals_the_complex_objective_and_gradient(lowdim):
    """Values and gradient equal objective_and_gradient (itself checked against autograd), batched and squeezed."""
    insts = [fang_preset(s, num_sensing_streams=5) for s in range(3)]
    b = _Batch.stack(insts)
    g = torch.Generator().manual_seed(3)
    if lowdim:
        SCALowDim()._prepare(b, insts)
    n = b.H.shape[-2]
    W = torch.randn(3, n, 9, dtype=torch.complex128, generator=g) * 0.03
    ref = objective_and_gradient(b, W)
    prob = _RealProblem.from_batch(b, 9)
    values, grad = prob(_real(W))
    assert_close(values[:, 0], ref["objective"], rtol=1e-11, what="objective")
    assert_close(values[:, 1], ref["rates"].sum(-1), rtol=1e-11, what="sum rate")
    assert_close(values[:, 2], ref["crlb"], rtol=1e-11, what="tr(F^-1)")
    gref = _real(ref["grad"])
    assert_close(grad, gref, rtol=1e-9, atol=1e-11 * float(gref.abs().max()), what="gradient")
    one = prob.select(torch.tensor([2])).squeeze()
    v1, g1 = one(_real(W[2]))
    assert_close(v1, values[2], rtol=1e-13, what="squeezed values")
    assert_close(g1, grad[2], rtol=1e-12, atol=1e-14 * float(grad.abs().max()), what="squeezed gradient")


def _quadratic(n, seed):
    """max x^T A x on the sphere |x| = 1: the optimum is the top eigenvalue (an independent closed form)."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=torch.float64, generator=g)
    A = M @ M.T

    class Quad:
        value_names = ("objective",)

        def __init__(self, A):
            self.A = A

        def __call__(self, x):
            ax = x @ self.A.mT if x.dim() > 1 else self.A @ x
            return (x * ax).sum(-1, keepdim=True), 2.0 * ax

        def select(self, idx):
            return self

        def squeeze(self):
            return self

    return A, Quad(A)


def test_lbfgs_finds_the_top_eigenvalue_of_a_quadratic_on_the_sphere():
    A, quad = _quadratic(30, 0)
    sphere = PowerSphere(torch.ones(1, dtype=torch.float64), 15, 1)
    x0 = torch.ones(1, 30, dtype=torch.float64) / math.sqrt(30)
    res = lbfgs_ascent(quad, x0, sphere, tolerance=1e-14, max_iterations=2000)
    top = float(torch.linalg.eigvalsh(A)[-1])
    assert res.stops[0] in ("converged", "stalled")
    assert float(res.x[0] @ A @ res.x[0]) == pytest.approx(top, rel=1e-9)
    objs = [r["objective"] for r in res.traces[0]]
    assert all(b > a for a, b in zip(objs, objs[1:]))  # every accepted step raises f (Armijo)


def test_batched_ascent_equals_one_by_one_with_early_finishers():
    """Instances that stop at different iterations (and leave the batch) follow their lone iteration."""
    insts = [small_preset(s) for s in range(6)]
    solver = SCA(max_iterations=400, tolerance=1e-11)
    batch = solver.solve_batch(insts)
    iters = {r.iterations for r in batch}
    assert len(iters) > 2  # they do finish at different iterations
    for inst, rb in zip(insts, batch):
        ra = solver.solve(inst)
        assert ra.status == rb.status and ra.iterations == rb.iterations, (ra.message, rb.message)
        assert_close(rb.solution["W"], ra.solution["W"], rtol=1e-8, atol=1e-11, what="W")


def test_per_antenna_lbfgs_keeps_every_antenna_at_its_power_and_beats_the_paper_step_start():
    inst = fang_preset(0)
    res = SCA(power_constraint="per-antenna").solve(inst)
    W = res.solution["W"]
    rows = (W.abs() ** 2).sum(-1)
    assert_close(rows, torch.full_like(rows, inst.p_max_w / inst.num_tx), rtol=1e-12, what="row powers")
    assert res.feasible and res.status is Status.CONVERGED
    objs = [r["objective"] for r in res.trace]
    assert all(b >= a for a, b in zip(objs, objs[1:]))
    paper = SCA(power_constraint="per-antenna", step="paper", start_sensing_scale=1e-2, max_iterations=20000).solve(inst)
    assert res.metrics["objective"] >= paper.metrics["objective"] - 1e-6 * abs(paper.metrics["objective"])


def test_lbfgs_reaches_the_paper_steps_stationary_point_from_the_same_start():
    inst = fang_preset(2)
    paper = SCA(step="paper", tolerance=1e-12, max_iterations=20000).solve(inst)
    fast = SCA(start_sensing_scale=1.0, tolerance=1e-12).solve(inst)
    assert fast.status is Status.CONVERGED and paper.status is Status.CONVERGED
    assert fast.metrics["objective"] == pytest.approx(paper.metrics["objective"], rel=1e-7)
    assert fast.iterations * 5 < paper.iterations


def test_a_start_with_a_singular_fim_is_a_numerical_error():
    inst = small_preset(0)
    W0 = torch.zeros(inst.num_tx, inst.num_streams, dtype=torch.complex128)  # no power: F = 0
    from dataclasses import replace

    for step in ("lbfgs", "paper"):
        res = SCA(step=step).solve(replace(inst, W0=W0))
        assert res.status is Status.NUMERICAL_ERROR, (step, res.message)


def test_initial_point_is_unchanged_by_the_option():
    inst = small_preset(1)
    W = initial_point(inst, 0, False)
    assert float(torch.linalg.matrix_norm(W)) ** 2 == pytest.approx(inst.p_max_w, rel=1e-12)


def test_bench_fang_on_a_tiny_case(tmp_path):
    import csv

    from isac.experiments.bench import bench_fang, write_report

    rows = bench_fang(num_tx=(4,), instances=1, sdr_max_tx=0, echo=lambda _: None, batch=2, batch_threads=(1,))
    write_report(rows, tmp_path, "tiny")
    with open(tmp_path / "bench.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["method"] for r in table][:2] == ["sca", "sca rule=authors"]
    by = {(r["num_tx"], r["method"]): r for r in rows}
    assert by[(4, "sca rule=authors")]["speedup_vs_authors"] == 1.0
    assert by[(4, "sca")]["below_authors"] == 0
    assert by[(16, "sca rule=authors, one at a time")]["speedup_vs_authors"] == 1.0
    batched = by[(16, "sca solve_batch x2, 1 thread")]
    assert batched["instances"] == 2 and batched["instances_per_s"] > 0 and batched["ms_per_iteration"] > 0
    assert "instances/s" in (tmp_path / "bench.md").read_text()
