r"""Metrics of ``beampattern-sinr`` (004): beampattern MSE, beta, per-user SINR, power.

SINR is 004 eq. (9) via :func:`isac.metrics.comm.sinr` with beams ``[C, S]`` (the M
sensing streams interfere with every user, eq. (8)).

Feasibility (004 eq. (11)):

* every :math:`\Gamma_l \ge \Gamma_0(1-\text{SINR\_RTOL})`;
* :math:`|\mathrm{tr}(\mathbf R) - P_0| \le P_0\cdot\text{POWER\_RTOL}`, i.e. the power
  constraint holds **with equality** (eq. (11c)). Power below :math:`P_0` is *not*
  accepted: with the least-squares :math:`\beta^\star` the MSE scales as
  :math:`\mathrm{tr}(\mathbf R)^2`, so a solution could lower its MSE arbitrarily by
  transmitting less power, and the problem would no longer be the paper's.

``beampattern_mse_fine`` is the MSE of the same covariance on the 1-degree grid
:data:`FINE_GRID_DEG` (-90:1:89 deg, N = 180), with its own least-squares beta: the
number 004's Table II reports for designs made on coarser grids (a design matched on 10
grid points can have a near-zero MSE on those 10 points). On the default grid it equals
``beampattern_mse``.

SINRs in dB are floored at :data:`SINR_DB_FLOOR` so that a user with zero signal
gives a finite, JSON-encodable number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from isac.metrics.beampattern import beampattern, beampattern_mse, transmit_power_w
from isac.metrics.comm import sinr
from isac.metrics.evaluate import POWER_RTOL, SINR_RTOL, register_evaluator
from isac.scenario.instances.beampattern_sinr import PROBLEM, BeampatternSinrInstance

FINE_GRID_DEG = (-90.0, 90.0, 1.0)
"""The evaluation grid of ``beampattern_mse_fine``."""

SINR_DB_FLOOR = -300.0
"""Reported SINRs (dB) are clipped below at this value (a zero SINR would be -inf dB)."""


def objective_terms(inst: BeampatternSinrInstance, C: torch.Tensor, S: torch.Tensor) -> dict[str, torch.Tensor]:
    """Differentiable pieces for a batch of solutions of one instance.

    Args:
        C: ``[..., M, L]`` complex128; S: ``[..., M, M]`` complex128.
    Returns:
        ``beampattern [..., N]`` (W per unit array gain), ``beampattern_mse [...]``,
        ``beta [...]``, ``sinr [..., L]`` (linear), ``power_w [...]``.
    """
    pattern = beampattern(inst.steering, C, S)
    mse, beta = beampattern_mse(inst.desired, pattern)
    W = torch.cat([C, S], dim=-1)
    g = sinr(inst.H, W, inst.noise_w)
    return {"beampattern": pattern, "beampattern_mse": mse, "beta": beta, "sinr": g,
            "power_w": transmit_power_w(C, S)}


def sinr_db(x: torch.Tensor) -> torch.Tensor:
    """Linear SINR -> dB, floored at :data:`SINR_DB_FLOOR`."""
    return (10.0 * torch.log10(x.clamp_min(1e-300))).clamp_min(SINR_DB_FLOOR)


def constraints_met(sinr_lin: torch.Tensor, sinr_target: torch.Tensor | float, power_w: torch.Tensor,
                    power_budget_w: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(SINR met ``[...]``, power met ``[...]``) for SINRs ``[..., L]`` and powers ``[...]``: the
    tolerances of the module docstring, the one rule the evaluator and :func:`feasible_batch` use."""
    target = torch.as_tensor(sinr_target, dtype=torch.float64)
    budget = torch.as_tensor(power_budget_w, dtype=torch.float64)
    sinr_ok = (sinr_lin >= (target * (1 - SINR_RTOL)).unsqueeze(-1)).all(-1)
    power_ok = (power_w - budget).abs() <= budget * POWER_RTOL
    return sinr_ok, power_ok


def feasible_batch(instances, C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Feasibility (bool ``[B]``) of solutions ``C [B, M, L]``, ``S [B, M, M]`` of instances sharing M and L,
    without the rest of the evaluation (no beampattern): what a solver checks before deciding to project.
    Agrees with ``evaluate(...)["feasible"]`` (tested)."""
    H = torch.stack([i.H for i in instances])
    noise = torch.tensor([i.noise_w for i in instances], dtype=torch.float64)
    g = sinr(H, torch.cat([C, S], dim=-1), noise.unsqueeze(-1))
    target = torch.tensor([i.sinr_target for i in instances], dtype=torch.float64)
    budget = torch.tensor([i.power_w for i in instances], dtype=torch.float64)
    sinr_ok, power_ok = constraints_met(g, target, transmit_power_w(C, S), budget)
    return sinr_ok & power_ok


@register_evaluator(PROBLEM)
def evaluate_beampattern_sinr(inst: BeampatternSinrInstance, solution: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    C, S = solution["C"], solution["S"]
    t = objective_terms(inst, C, S)
    power = float(t["power_w"])
    g = t["sinr"]
    gamma0 = inst.sinr_target
    met = constraints_met(g, gamma0, t["power_w"], inst.power_w)
    sinr_ok, power_ok = bool(met[0]), bool(met[1])
    g_db = sinr_db(g)
    if tuple(inst.grid_deg) == FINE_GRID_DEG:
        mse_fine = float(t["beampattern_mse"])
    else:
        fine = inst.with_params(grid_deg=FINE_GRID_DEG)
        mse_fine = float(beampattern_mse(fine.desired, beampattern(fine.steering, C, S))[0])
    return {
        "beampattern_mse": float(t["beampattern_mse"]),
        "beampattern_mse_fine": mse_fine,
        "beta": float(t["beta"]),
        "min_sinr_db": float(g_db.min()),
        "sinr_db": g_db.tolist(),
        "sinr_target_db": float(inst.sinr_db),
        "power_w": power,
        "power_budget_w": float(inst.power_w),
        "sinr_met": sinr_ok,
        "power_met": bool(power_ok),
        "feasible": bool(sinr_ok and power_ok),
        "beampattern": t["beampattern"].tolist(),
        "grid_deg": inst.grid.tolist(),
    }
