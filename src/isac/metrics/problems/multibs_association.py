r"""Metrics of ``multibs-association`` (000): network sum rate, radar SNR, DoA CRB, power, association.

Feasibility (problem (P1), eq. (27)) with the tolerances of :mod:`isac.metrics.evaluate`:

* (27a) :math:`\Gamma_k\ge\Gamma_t(1-\mathrm{SINR\_RTOL})` for every BS;
* (27b) :math:`\mathrm{CRB}(\phi_k)\le\epsilon(1+\mathrm{SINR\_RTOL})` (no CRB tolerance exists
  in evaluate.py; the SINR one is reused so the bound is a relative tolerance too);
* (27c) :math:`\|\mathbf W_k\|_F^2\le P_t(1+\mathrm{POWER\_RTOL})`;
* (27d)-(27f) binary association, every CU on exactly one BS, every BS serving >= 1 CU.

Rates are reported in bit/s/Hz as 000 does (and in nats); ``sum_rate_per_user`` is the sum rate
divided by N (000 Fig. 7's "average sum rate per CU", bit/s/Hz); ``throughput_bps`` only when
the instance gives ``bandwidth_hz``. ``sinr_db`` is each CU's SINR at the BS that serves it ``[N]``
(eq. (8)); a zero ratio is reported as :data:`DB_FLOOR` dB. ``beampattern_bs{k}_db`` is BS k's transmit beampattern
:math:`10\log_{10}\mathbf a^H(\theta)\mathbf R_k\mathbf a(\theta)` (dBW) on ``grid_deg`` = 0, 1, ..., 180 deg
(000 Figs. 4-5; angles from the array axis, as eq. (5)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from isac.metrics.beampattern import beampattern, steering_matrix
from isac.metrics.bounds.li import li_doa_crb
from isac.metrics.evaluate import POWER_RTOL, SINR_RTOL, register_evaluator
from isac.metrics.network import association_checks, rate_matrix_nats, sinr_matrix
from isac.metrics.radar import detection_probability, radar_snr
from isac.scenario.instances.multibs_association import PROBLEM, MultibsAssociationInstance
from isac.units import LN2


def metric_terms(inst: MultibsAssociationInstance, W: torch.Tensor, association: torch.Tensor) -> dict[str, torch.Tensor]:
    """Differentiable pieces for beams ``W [..., K, M, N+Ns]`` and association ``[..., K, N]``.

    Returns ``sinr [..., K, N]``, ``rates_bps_hz [..., N]`` (B = 1), ``sum_rate_bps_hz [...]``,
    ``radar_snr [..., K]`` (linear), ``crb_rad2 [..., K]``, ``power_w [..., K]``.
    """
    rates_nats = rate_matrix_nats(inst.H, W, association, inst.noise_comm_w).sum(-2)
    a_det = inst.array.steering(inst.det_angle_rad)  # [K, M]
    snr = radar_snr(a_det, W, echo_power_gain=inst.det_echo_power_gain, rcs_variance=inst.rcs_variance,
                    noise_power_w=inst.noise_radar_w)
    crb = li_doa_crb(inst.array, inst.est_angle_rad, inst.est_rcs, inst.est_echo_power_gain, W,
                     inst.snapshots, inst.noise_radar_w)
    power = (W.real**2 + W.imag**2).sum(dim=(-2, -1))
    rates = rates_nats / LN2
    return {
        "sinr": sinr_matrix(inst.H, W, inst.noise_comm_w),
        "rates_bps_hz": rates,
        "sum_rate_bps_hz": rates.sum(-1),
        "radar_snr": snr,
        "crb_rad2": crb,
        "power_w": power,
    }


DB_FLOOR = -3000.0
"""dB value reported for a zero power ratio (JSON has no -inf): 10 log10(1e-300)."""


def _db(x: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(x.clamp(min=1e-300))


@register_evaluator(PROBLEM)
def evaluate_multibs_association(inst: MultibsAssociationInstance, solution: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    W = solution["W"]
    A = torch.as_tensor(solution["association"]).to(torch.float64)
    t = metric_terms(inst, W, A)
    checks = association_checks(A)
    p_max = inst.p_max_w
    power_ok = t["power_w"] <= p_max * (1 + POWER_RTOL)
    snr_ok = t["radar_snr"] >= inst.snr_min * (1 - SINR_RTOL)
    crb_ok = t["crb_rad2"] <= inst.crb_max_rad2 * (1 + SINR_RTOL)
    out: dict[str, Any] = {
        "sum_rate_bps_hz": float(t["sum_rate_bps_hz"]),
        "sum_rate_nats": float(t["sum_rate_bps_hz"]) * LN2,
        "sum_rate_per_user": float(t["sum_rate_bps_hz"]) / inst.num_users,
        "rates_bps_hz": t["rates_bps_hz"].tolist(),
        "sinr_db": _db((A * t["sinr"]).sum(-2)).tolist(),
        "radar_snr_db": _db(t["radar_snr"]).tolist(),
        "crb_rad2": t["crb_rad2"].tolist(),
        "power_w": t["power_w"].tolist(),
        "total_power_w": float(t["power_w"].sum()),
        "p_max_w": p_max.tolist(),
        "bs_load": A.sum(-1).tolist(),
        "association_valid": bool(checks["valid"]),
        "power_ok": power_ok.tolist(),
        "radar_snr_ok": snr_ok.tolist(),
        "crb_ok": crb_ok.tolist(),
    }
    if inst.false_alarm_probability is not None:
        out["detection_probability"] = detection_probability(t["radar_snr"], inst.false_alarm_probability).tolist()
    if inst.bandwidth_hz is not None:
        out["throughput_bps"] = float(t["sum_rate_bps_hz"]) * inst.bandwidth_hz
    grid = torch.arange(0.0, 181.0, 1.0, dtype=torch.float64)
    gain = beampattern(steering_matrix(inst.array, grid), W, W[..., :0])  # [K, 181], a^H R_k a in W
    out["grid_deg"] = grid.tolist()
    for k in range(inst.num_bs):
        out[f"beampattern_bs{k}_db"] = _db(gain[k]).tolist()
    out["feasible"] = bool(checks["valid"] and power_ok.all() and snr_ok.all() and crb_ok.all())
    return out
