r"""Metrics of ``crlb-sumrate`` (003): rates in nats, tr(F^-1), objective, power.

``objective = delta_c * sum_rate_nats - delta_s * crlb_trace``; feasible when
:math:`\mathrm{tr}(\mathbf W\mathbf W^H)\le P_t(1+10^{-6})` and F is invertible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from isac.metrics.bounds.fang import fang_fim
from isac.metrics.comm import rates_nats
from isac.metrics.evaluate import POWER_RTOL, register_evaluator
from isac.metrics.fim import crb_trace
from isac.scenario.instances.crlb_sumrate import PROBLEM, CrlbSumrateInstance


def objective_terms(inst: CrlbSumrateInstance, W: torch.Tensor) -> dict[str, torch.Tensor]:
    """Differentiable pieces ``rates_nats [..., K]``, ``crlb_trace [...]``, ``objective [...]``, ``power_w [...]``.

    ``W [..., Nt, K+Ns]``; leading dimensions are a batch of beamformers for this instance.
    """
    rates = rates_nats(inst.H, W, inst.noise_comm_w)
    fim = fang_fim(inst.tx_array, inst.rx_array, inst.theta_rad, inst.phi_rad, inst.alpha, W,
                   inst.snapshots, inst.noise_sense_w)
    crlb = crb_trace(fim)
    obj = inst.delta_c * rates.sum(-1) - inst.delta_s * crlb
    power = (W.real**2 + W.imag**2).sum(dim=(-2, -1))
    return {"rates_nats": rates, "crlb_trace": crlb, "objective": obj, "power_w": power, "fim": fim}


@register_evaluator(PROBLEM)
def evaluate_crlb_sumrate(inst: CrlbSumrateInstance, solution: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    W = solution["W"]
    t = objective_terms(inst, W)
    power = float(t["power_w"])
    crlb = float(t["crlb_trace"])
    feasible = power <= inst.p_max_w * (1 + POWER_RTOL) and math.isfinite(crlb)
    return {
        "sum_rate_nats": float(t["rates_nats"].sum()),
        "rates_nats": t["rates_nats"].tolist(),
        "crlb_trace": crlb,
        "objective": float(t["objective"]),
        "power_w": power,
        "p_max_w": inst.p_max_w,
        "feasible": bool(feasible),
    }
