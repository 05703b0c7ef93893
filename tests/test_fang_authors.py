"""``sca -o rule=authors``: the authors' iteration, against a NumPy port written from its formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isac.metrics.bounds.fang import fang_derivatives
from isac.metrics.fim import crb_trace_covariance_gradient, fisher_information
from isac.scenario.problems import make_preset
from isac.solvers.base import Status
from isac.solvers.fang_sca import initial_point
from isac.solvers.registry import get_solver


def _q(inst, W: np.ndarray) -> np.ndarray:
    """Q of the instance at W (the engine's; it is checked against autograd in the FIM tests)."""
    d = fang_derivatives(inst.tx_array, inst.rx_array, inst.theta_rad, inst.phi_rad, inst.alpha)
    Wt = torch.as_tensor(W)
    fim = fisher_information(d, beams=Wt, snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w)
    return crb_trace_covariance_gradient(d, fim, snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w).numpy()


def _authors_numpy(inst, W: np.ndarray, tol: float, max_it: int) -> tuple[np.ndarray, int]:
    H, k = inst.H.numpy(), inst.num_users
    dc, ds, p = inst.delta_c, inst.delta_s, inst.p_max_w
    for it in range(1, max_it + 1):
        hw = H.conj().T @ W[:, :k]
        total = (np.abs(hw) ** 2).sum(1) + inst.noise_comm_w  # communication columns only
        desired = np.diag(hw)
        interf = total - np.abs(desired) ** 2
        C1 = np.zeros_like(W)
        C1[:, :k] = dc * H * (desired / interf)[None, :]
        C2 = dc * (H * (np.abs(desired) ** 2 / (interf * total))[None, :]) @ H.conj().T - ds * _q(inst, W)
        mu = np.abs(np.linalg.eigvalsh(0.5 * (C2 + C2.conj().T))).max()
        W_new = C1 + mu * W - C2 @ W
        W_new *= np.sqrt(p / np.trace(W_new @ W_new.conj().T).real)
        if np.linalg.norm(W_new - W, 2) < tol:
            return W_new, it
        W = W_new
    return W, max_it


@pytest.mark.parametrize("seed", [0, 1])
def test_authors_rule_equals_a_numpy_port(seed):
    torch.set_num_threads(1)
    inst = make_preset("crlb-sumrate", "small", seed)
    assert inst.num_sensing_streams > 0  # the comm-only T_k differs from the paper's here
    W0 = initial_point(inst, 0, False).numpy()
    W_ref, its = _authors_numpy(inst, W0, 1e-6, 2000)
    res = get_solver("crlb-sumrate", "sca", {"rule": "authors", "tolerance": 1e-6, "max_iterations": 2000}).solve(inst)
    assert res.status == Status.CONVERGED and res.iterations == its < 2000
    np.testing.assert_allclose(res.solution["W"].numpy(), W_ref, rtol=0, atol=1e-9 * np.abs(W_ref).max())


def test_authors_rule_defaults_and_options():
    s = get_solver("crlb-sumrate", "sca", {"rule": "authors"})
    assert (s.max_iterations, s.tolerance, s.step, s.start_sensing_scale) == (2000, 1e-5, "paper", 1.0)
    p = get_solver("crlb-sumrate", "sca", {"step": "paper"})
    assert (p.max_iterations, p.tolerance, p.start_sensing_scale) == (20000, 1e-8, 1.0)
    d = get_solver("crlb-sumrate", "sca")
    assert (d.step, d.max_iterations, d.tolerance, d.start_sensing_scale) == ("lbfgs", 5000, 1e-10, 1e-2)
    from isac.solvers.base import OptionError

    with pytest.raises(OptionError, match="step must be 'paper'"):
        get_solver("crlb-sumrate", "sca", {"rule": "authors", "step": "adaptive"})
    low = get_solver("crlb-sumrate", "sca-lowdim", {"rule": "authors"}).solve(make_preset("crlb-sumrate", "small", 0))
    assert low.status == Status.CONVERGED and low.feasible


@pytest.mark.parametrize("seed", [14, 56])
def test_default_ends_at_or_above_the_authors_rule(seed):
    """From the same W0, the plain L-BFGS start drops a user on these instances and ends below the authors'
    iteration; the default (sensing block of W0 damped by 1e-2 first) does not."""
    torch.set_num_threads(1)
    from isac.scenario.instances.crlb_sumrate import fang_preset

    inst = fang_preset(seed)
    authors = get_solver("crlb-sumrate", "sca", {"rule": "authors"}).solve(inst).metrics["objective"]
    default = get_solver("crlb-sumrate", "sca").solve(inst)
    plain = get_solver("crlb-sumrate", "sca", {"start_sensing_scale": 1.0}).solve(inst)
    assert default.status == Status.CONVERGED and default.feasible
    assert default.metrics["objective"] >= authors - 1e-4
    assert plain.metrics["objective"] < authors - 1e-3
    assert min(plain.metrics["rates_nats"]) < 1e-3  # the lower optimum serves one user less
