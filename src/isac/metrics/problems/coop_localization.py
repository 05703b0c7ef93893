r"""Metrics of ``coop-localization`` (002): rates in bit/s/Hz, SPEB in m², per-BS power.

Joint transmission (eq. (2)-(4)) stacks the BSs' channels and beams,
:math:`\mathbf h_k\in\mathbb C^{NL}`, :math:`\mathbf W\in\mathbb C^{NL\times(K+N_s)}`,
and reuses :func:`isac.metrics.comm.rates_nats` (the sensing streams interfere with
every user as in eq. (3)); rates are reported in bit/s/Hz as in 002.

``objective = sum_rate_bps_hz`` (eq. (32a)); feasible when every BS meets its budget,
:math:`\|\mathbf P_n\|_F^2\le P_n(1+\texttt{POWER_RTOL})` (32b), and
:math:`\mathrm{SPEB}\le\gamma(1+\texttt{SPEB_RTOL})` (32c), always on the true
channels and target position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from isac.metrics.bounds.lian import lian_speb, stack_beams
from isac.metrics.comm import rates_nats, sinr
from isac.metrics.evaluate import POWER_RTOL, register_evaluator
from isac.scenario.instances.coop_localization import PROBLEM, CoopLocalizationInstance
from isac.units import nats_to_bits

SPEB_RTOL = 1e-6
"""An SPEB threshold counts as met when ``speb <= gamma * (1 + SPEB_RTOL)``."""


def objective_terms(inst: CoopLocalizationInstance, W: torch.Tensor) -> dict[str, torch.Tensor]:
    """Differentiable pieces for beams ``W [..., N, L, K+Ns]`` (leading dims: a batch of solutions).

    Returns ``rates_bps_hz [..., K]``, ``sum_rate_bps_hz [...]``, ``sinr [..., K]``,
    ``speb_m2 [...]``, ``power_w [..., N]`` (per BS).
    """
    Ws = stack_beams(W)
    rates = nats_to_bits(rates_nats(inst.H_stacked, Ws, inst.noise_comm_w))
    speb = lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, W,
                     inst.snapshots, inst.noise_sense_w, model=inst.speb_model)
    power = (W.real**2 + W.imag**2).sum(dim=(-2, -1))
    return {
        "rates_bps_hz": rates,
        "sum_rate_bps_hz": rates.sum(-1),
        "sinr": sinr(inst.H_stacked, Ws, inst.noise_comm_w),
        "speb_m2": speb,
        "power_w": power,
    }


@register_evaluator(PROBLEM)
def evaluate_coop_localization(inst: CoopLocalizationInstance, solution: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    t = objective_terms(inst, solution["W"])
    power = t["power_w"]
    p_max = inst.p_max_w
    speb = float(t["speb_m2"])
    power_ok = bool((power <= p_max * (1 + POWER_RTOL)).all())
    speb_ok = math.isfinite(speb) and speb <= inst.speb_max_m2 * (1 + SPEB_RTOL)
    sum_rate = float(t["sum_rate_bps_hz"])
    return {
        "sum_rate_bps_hz": sum_rate,
        "rates_bps_hz": t["rates_bps_hz"].tolist(),
        "sinr": t["sinr"].tolist(),
        "speb_m2": speb,
        "speb": speb,
        "speb_max_m2": inst.speb_max_m2,
        "power_w": power.tolist(),
        "p_max_w": p_max.tolist(),
        "total_power_w": float(power.sum()),
        "power_feasible": power_ok,
        "speb_feasible": bool(speb_ok),
        "feasible": bool(power_ok and speb_ok),
        "objective": sum_rate,
    }
