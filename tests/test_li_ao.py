"""000's alternating optimisation (solver ``ao`` of ``multibs-association``).

Every returned point is re-checked against the numpy implementation of the paper's formulas in
``test_li`` (eqs. (8), (18), (22) with (64)-(66), (24)-(26)), not against the library's metrics.
"""

import json
import math

import numpy as np
import pytest
import torch

from helpers import run_cli
from test_li import first_principles, paper_crb, paper_rates, paper_snr
from isac.scenario.problems import make_preset
from isac.solvers.base import OptionError, Status
from isac.solvers.li_ao import association_sinr_matrix
from isac.solvers.registry import default_solver, get_solver


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def check_against_paper(inst, res):
    W, A = res.solution["W"], res.solution["association"]
    Wn, An = W.numpy(), A.numpy()
    rates = paper_rates(inst.H.numpy(), Wn, An, inst.noise_comm_w)
    assert res.metrics["sum_rate_bps_hz"] == pytest.approx(rates.sum(), rel=1e-9)
    assert res.metrics["sum_rate_per_user"] == pytest.approx(rates.sum() / inst.num_users, rel=1e-9)
    for k in range(inst.num_bs):
        snr = paper_snr(float(inst.det_angle_rad[k]), float(inst.det_echo_power_gain[k]), Wn[k], inst.rcs_variance,
                        inst.noise_radar_w)
        assert res.metrics["radar_snr_db"][k] == pytest.approx(10 * math.log10(snr), abs=1e-9)
        crb = paper_crb(float(inst.est_angle_rad[k]), complex(inst.est_rcs[k]), float(inst.est_echo_power_gain[k]),
                        Wn[k], inst.snapshots, inst.noise_radar_w)
        assert res.metrics["crb_rad2"][k] == pytest.approx(crb, rel=1e-9)
        unserved = An[k] == 0
        assert np.all(Wn[k][:, : inst.num_users][:, unserved] == 0)
    if res.status in (Status.CONVERGED, Status.MAX_ITERATIONS):
        assert first_principles(inst, W, A)
    objs = [t["objective"] for t in res.trace]
    assert objs and all(b >= a for a, b in zip(objs, objs[1:]))
    assert objs[-1] == pytest.approx(rates.sum(), rel=1e-9)


@pytest.mark.parametrize("association", ["exact", "gale-shapley", "fixed", "brute-force"])
def test_ao_small_network(association):
    inst = make_preset("multibs-association", "li", 1, num_users=6, num_antennas=8)
    res = get_solver("multibs-association", "ao", {"association": association}).solve(inst)
    assert res.status in (Status.CONVERGED, Status.MAX_ITERATIONS), res.message
    check_against_paper(inst, res)


def test_ao_default_preset_and_fixed_keeps_initial_matching():
    inst = make_preset("multibs-association", "li", 2)
    assert default_solver("multibs-association") == "ao"
    fixed = get_solver("multibs-association", "ao", {"association": "fixed"}).solve(inst)
    check_against_paper(inst, fixed)
    from isac.solvers.li_association import associate

    snr = inst.p_max_w.numpy()[:, None] * (np.abs(inst.H.numpy()) ** 2).sum(axis=1) / inst.noise_comm_w
    gs = associate(snr, "fixed").association
    assert np.array_equal(fixed.solution["association"].numpy().argmax(0), gs)
    exact = get_solver("multibs-association", "ao").solve(inst)
    check_against_paper(inst, exact)


def test_association_matrix_equals_true_objective_at_current_point():
    inst = make_preset("multibs-association", "li", 3)
    res = get_solver("multibs-association", "ao", {"association": "gale-shapley", "max_iterations": 1}).solve(inst)
    W = res.solution["W"]
    assoc = res.solution["association"].numpy().argmax(0)
    S = association_sinr_matrix(inst, W, assoc)
    # (P2)'s objective of S at the current U, written out: sum over BSs of the mean log2(1 + S)
    value = sum(np.mean(np.log2(1 + S[k, assoc == k])) for k in range(inst.num_bs))
    assert value == pytest.approx(res.metrics["sum_rate_bps_hz"], rel=1e-12)
    # a what-if entry: CU i alone on BS k with an MRT beam at its current power, against BS k's beams
    i = 0
    k = (assoc[i] + 1) % inst.num_bs
    h = inst.H.numpy()[k][:, i]
    p = float(np.sum(np.abs(W.numpy()[assoc[i]][:, i]) ** 2))
    interference = float(np.sum(np.abs(h.conj() @ W.numpy()[k]) ** 2)) + inst.noise_comm_w
    assert S[k, i] == pytest.approx(p * np.vdot(h, h).real / interference, rel=1e-12)


@pytest.mark.parametrize("change,words", [({"snr_min_db": 80.0}, ["BS 0", "radar SNR"]),
                                          ({"crb_max_rad2": 1e-14}, ["BS 0", "CRB"])])
def test_unreachable_sensing_is_infeasible(change, words):
    inst = make_preset("multibs-association", "li", 0).with_params(**change)
    res = get_solver("multibs-association", "ao").solve(inst)
    assert res.status is Status.INFEASIBLE
    for w in words:
        assert w in res.message
    assert res.metrics["feasible"] is False


def test_ao_options_are_checked():
    with pytest.raises(OptionError, match="unknown association method"):
        get_solver("multibs-association", "ao", {"association": "nope"})
    with pytest.raises(OptionError, match="unknown beamformer"):
        get_solver("multibs-association", "ao", {"beamformer": "nope"})


def test_cli_solve_and_problems(capsys, monkeypatch, tmp_path):
    code, out, _ = run_cli(["problems", "multibs-association"], capsys, monkeypatch)
    assert code == 0 and "ao" in out and "li-table3" in out
    inst_file, res_file = tmp_path / "inst.json", tmp_path / "res.json"
    code, _, err = run_cli(["instance", "multibs-association", "--preset", "small", "--seed", "2", "--out", str(inst_file)],
                           capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run_cli(["solve", "multibs-association", "--instance", str(inst_file),
                              "-o", "association=gale-shapley", "--out", str(res_file)], capsys, monkeypatch)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["solver"] == "ao" and summary["status"] in ("CONVERGED", "MAX_ITERATIONS")
    code, out, err = run_cli(["evaluate", "multibs-association", "--instance", str(inst_file), "--solution", str(res_file)],
                             capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(out)["sum_rate_bps_hz"] == pytest.approx(summary["metrics"]["sum_rate_bps_hz"], rel=1e-12)
    code, _, err = run_cli(["solve", "multibs-association", "--instance", str(inst_file), "-o", "association=nope"],
                           capsys, monkeypatch)
    assert code == 2 and "unknown association method" in err
