"""002's sca-sdr: lossless subspace, exact extraction, binding SPEB constraint, statuses."""

from __future__ import annotations

import pytest
import torch

from isac.metrics.bounds.lian import lian_fim, stack_beams
from isac.metrics.problems.coop_localization import objective_terms
from isac.scenario.instances.coop_localization import lian_preset, small_preset
from isac.solvers.base import OptionError, Status
from isac.solvers.lian_sca import lossless_subspace
from isac.solvers.registry import get_solver


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_subspace_keeps_rates_fim_and_lowers_power():
    inst = lian_preset(2)
    E, blocks = lossless_subspace(inst)
    E = torch.as_tensor(E)
    assert E.shape[1] == 3 * (inst.num_users + 3)
    Pi = E @ E.conj().T
    g = torch.Generator().manual_seed(0)
    W = torch.randn(inst.num_bs, inst.num_antennas, 7, dtype=torch.complex128, generator=g)
    Wp = (Pi @ stack_beams(W)).reshape(W.shape)
    a, b = objective_terms(inst, W), objective_terms(inst, Wp)
    assert torch.allclose(a["rates_bps_hz"], b["rates_bps_hz"], rtol=1e-9)
    fa = lian_fim(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, W, 1, 1.0)
    fb = lian_fim(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, Wp, 1, 1.0)
    assert torch.allclose(fa, fb, rtol=1e-8, atol=1e-10 * float(fa.abs().max()))
    assert bool((b["power_w"] <= a["power_w"] * (1 + 1e-12)).all()) and bool((b["power_w"] < a["power_w"]).any())
    assert [blk.stop - blk.start for blk in blocks] == [inst.num_users + 3] * 3


def _solve(inst, **opts):
    return get_solver("coop-localization", "sca-sdr", opts).solve(inst)


def test_sca_sdr_binding_constraint_exact_extraction_and_order():
    tight, loose, free = (small_preset(0, gamma_over_floor=g) for g in (2.0, 5.0, 1e6))
    r2, r5, rf = _solve(tight), _solve(loose), _solve(free)
    for r, inst in ((r2, tight), (r5, loose), (rf, free)):
        assert r.status is Status.CONVERGED and r.feasible, r.message
        assert r.metrics["speb_m2"] <= inst.speb_max_m2
        assert bool((torch.tensor(r.metrics["power_w"]) <= inst.p_max_w * (1 + 1e-6)).all())
        # extraction keeps every h^H R_k h and R: the beams' sum rate is the SDR's (tight relaxation here)
        assert r.info["rank_gap"] < 1e-5
        assert r.metrics["sum_rate_bps_hz"] == pytest.approx(r.info["relaxed_sum_rate_bps_hz"], rel=1e-4)
        assert r.info["restored_steps"] == 0
    # at 2x the floor the SPEB constraint is active (the SDPs use gamma (1 - margin)) and costs rate
    assert r2.metrics["speb_m2"] / tight.speb_max_m2 == pytest.approx(1 - 1e-3, abs=1e-5)
    assert r2.metrics["sum_rate_bps_hz"] < r5.metrics["sum_rate_bps_hz"] < rf.metrics["sum_rate_bps_hz"]
    assert rf.metrics["speb_m2"] < 1e-3 * free.speb_max_m2
    # the SCA trace never decreases (a minorise-maximise scheme)
    rel = [t["relaxed_sum_rate_bps_hz"] for t in r2.trace]
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(rel, rel[1:]))


def test_sca_sdr_statuses_and_options():
    r = _solve(small_preset(1, gamma_over_floor=0.8))
    assert r.status is Status.INFEASIBLE and not r.solution and "below the SPEB floor" in r.message
    with pytest.raises(OptionError, match="max_iterations"):
        get_solver("coop-localization", "sca-sdr", {"max_iterations": "0"})
    with pytest.raises(OptionError, match="solver"):
        get_solver("coop-localization", "sca-sdr", {"solver": "MOSEK"})
    one = _solve(small_preset(1), max_iterations=1)
    assert one.status in (Status.MAX_ITERATIONS, Status.CONVERGED) and one.iterations == 1 and one.feasible
