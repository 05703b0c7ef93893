r"""Metrics of ``bs-selection`` (001): per-BS and total power, user SINR, location CRLB, feasibility.

SINR (eq. (5) of 001). Every BS sends its own independent symbols, so a user
served by BS :math:`a(k)` sees

.. math::

    \gamma_k=\frac{|\mathbf h_{a(k),k}^H\mathbf w_{a(k),k}|^2}
    {\sum_{s}\sum_{(s,k')\ne(a(k),k)}|\mathbf h_{s,k}^H\mathbf w_{s,k'}|^2
     +\sum_s\mathbf h_{s,k}^H\mathbf R_s\mathbf h_{s,k}+\sigma_{c}^2}.

This is :func:`isac.metrics.comm.sinr` on the stacked channel
:math:`\mathbf h_k=[\mathbf h_{1,k};\dots;\mathbf h_{S,k}]` with block-structured beams
(:func:`stack_for_comm`): column k holds :math:`\mathbf w_{a(k),k}` in block
:math:`a(k)`, then every other beam :math:`\mathbf w_{s,k'}` and the sensing
factors :math:`\mathbf R_s=\mathbf V_s\mathbf V_s^H` as interfering streams, each in its own block.
When every user has exactly one non-zero beam (C4) this is exactly eq. (5) with
:math:`a_{s,k}=1[\mathbf w_{s,k}\ne\mathbf 0]`. (If a user had several non-zero beams,
001's (5) would add their powers non-coherently; we count only the serving one and
treat the others as interference, and the solution is infeasible by C4 anyway.)
The serving BS :math:`a(k)` is the one with the strongest beam :math:`\|\mathbf w_{s,k}\|`.

Feasible when (tolerances: ``POWER_RTOL``, ``SINR_RTOL`` of :mod:`isac.metrics.evaluate`,
``CRB_RTOL`` and ``SILENT_RTOL`` here):

* per-BS power :math:`\sum_k\|\mathbf w_{s,k}\|^2+\mathrm{tr}\,\mathbf R_s\le P` (C1);
* :math:`\mathrm{CRLB}^{(s_r)}\le\epsilon` (C2) for the declared receiver :math:`s_r`;
* :math:`\gamma_k\ge\Gamma_k` (C3);
* each user has exactly one beam of power :math:`>` ``SILENT_RTOL``:math:`\cdot P` (C4);
* the receiver's power is :math:`\le` ``SILENT_RTOL``:math:`\cdot P` (C5, C6);
* every :math:`\mathbf R_s` is Hermitian and PSD up to ``SILENT_RTOL``:math:`\cdot P`.

``objective`` = ``total_power_w`` (the objective of (8)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from isac.metrics.bounds.xu import xu_crlb
from isac.metrics.comm import sinr
from isac.metrics.evaluate import POWER_RTOL, SINR_RTOL, register_evaluator
from isac.scenario.instances.bs_selection import PROBLEM, BsSelectionInstance
from isac.tensors import COMPLEX, hermitian
from isac.units import lin_to_db

CRB_RTOL = 1e-6
"""A CRLB threshold counts as met when ``crb <= crb_max * (1 + CRB_RTOL)``."""

SILENT_RTOL = 1e-9
"""A beam, a BS or a negative eigenvalue of R_s counts as zero below ``SILENT_RTOL * P`` watts."""


def serving_bs(W: torch.Tensor) -> torch.Tensor:
    """Serving BS of each user ``[..., K]`` (int64): the BS with the strongest beam in ``W [..., S, N, K]``."""
    return (W.real**2 + W.imag**2).sum(-2).argmax(-2)


def psd_factor(Rs: torch.Tensor) -> torch.Tensor:
    r"""``V [..., N, N]`` with :math:`\mathbf V\mathbf V^H` = the PSD part of the Hermitian part of ``Rs``."""
    herm = 0.5 * (Rs + hermitian(Rs))
    evals, evecs = torch.linalg.eigh(herm)
    return evecs * torch.sqrt(evals.clamp(min=0.0)).to(COMPLEX).unsqueeze(-2)


def stack_for_comm(H: torch.Tensor, W: torch.Tensor, sensing_beams: torch.Tensor,
                   serving: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Stacked channel and beams for :func:`isac.metrics.comm.sinr` (see module docstring).

    Args:
        H: ``[..., S, N, K]`` per-BS channels.
        W: ``[..., S, N, K]`` per-BS user beams.
        sensing_beams: ``[..., S, N, M]`` with :math:`\mathbf R_s=\mathbf V_s\mathbf V_s^H`.
        serving: ``[..., K]`` serving BS per user (default :func:`serving_bs`).

    Returns:
        ``H_big [..., S*N, K]`` and ``W_big [..., S*N, K + S*K + S*M]``: K serving beams,
        then all S*K user beams with the serving ones zeroed, then the S*M sensing streams.
    """
    S, N, K = W.shape[-3], W.shape[-2], W.shape[-1]
    if serving is None:
        serving = serving_bs(W)
    onehot = torch.nn.functional.one_hot(serving, S).transpose(-1, -2).to(COMPLEX)  # [..., S, K]
    eye = torch.eye(S, dtype=COMPLEX, device=W.device)

    def blocks(x: torch.Tensor) -> torch.Tensor:
        """``x [..., S, N, C]`` -> ``[..., S*N, S*C]``: column (t, c) holds x[t, :, c] in block t."""
        c = x.shape[-1]
        big = eye[:, None, :, None] * x.unsqueeze(-2)  # [..., S, N, S, C]
        return big.reshape(*big.shape[:-4], S * N, S * c)

    serve = (W * onehot.unsqueeze(-2)).reshape(*W.shape[:-3], S * N, K)  # block a(k) of column k
    others = blocks(W * (1 - onehot).unsqueeze(-2))
    H_big = H.reshape(*H.shape[:-3], S * N, K)
    W_big = torch.cat([serve, others, blocks(sensing_beams)], dim=-1)
    return H_big, W_big


def user_sinr(inst: BsSelectionInstance, W: torch.Tensor, sensing_beams: torch.Tensor) -> torch.Tensor:
    """Linear SINR ``[..., K]`` of eq. (5); ``W [..., S, N, K]``, ``sensing_beams [..., S, N, M]``. Differentiable."""
    H_big, W_big = stack_for_comm(inst.H, W, sensing_beams)
    return sinr(H_big, W_big, inst.noise_comm_w)


def position_crlb(inst: BsSelectionInstance, W: torch.Tensor, Rs: torch.Tensor, receiver) -> torch.Tensor:
    r"""Location CRLB ``[...]`` (m^2, eq. (7)) with per-BS covariance :math:`\mathbf W_s\mathbf W_s^H+\mathbf R_s`."""
    cov = W @ hermitian(W) + Rs
    return xu_crlb(inst.array, inst.bs_positions_m, inst.array_axes, inst.target_position_m, inst.alpha,
                   receiver, covariance=cov, snapshots=inst.snapshots, noise_power_w=inst.noise_sense_w)


def bs_power_w(W: torch.Tensor, Rs: torch.Tensor) -> torch.Tensor:
    r"""Per-BS transmit power ``[..., S]`` (W): :math:`\sum_k\|\mathbf w_{s,k}\|^2+\Re\,\mathrm{tr}\,\mathbf R_s` (C1)."""
    return (W.real**2 + W.imag**2).sum((-2, -1)) + Rs.diagonal(dim1=-2, dim2=-1).real.sum(-1)


@register_evaluator(PROBLEM)
def evaluate_bs_selection(inst: BsSelectionInstance, solution: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Metrics and feasibility of ``{"receiver", "W" [S, N, K], "Rs" [S, N, N]}`` (see module docstring)."""
    receiver = int(solution["receiver"])
    W, Rs = solution["W"], solution["Rs"]
    S = inst.num_bs
    if not 0 <= receiver < S:
        return {"feasible": False, "error": f"receiver: must be in [0, {S - 1}], got {receiver}"}
    p_max = inst.p_max_w
    silent = SILENT_RTOL * p_max
    power = bs_power_w(W, Rs)
    gamma = user_sinr(inst, W, psd_factor(Rs))
    crb = float(position_crlb(inst, W, Rs, receiver))
    beam_power = (W.real**2 + W.imag**2).sum(-2)  # [S, K]
    beams_per_user = (beam_power > silent).sum(0)
    herm_err = float((Rs - hermitian(Rs)).abs().amax()) if Rs.numel() else 0.0
    min_eig = float(torch.linalg.eigvalsh(0.5 * (Rs + hermitian(Rs))).amin())
    checks = {
        "power_ok": bool((power <= p_max * (1 + POWER_RTOL)).all()),
        "sinr_ok": bool((gamma >= inst.sinr_min * (1 - SINR_RTOL)).all()),
        "crb_ok": math.isfinite(crb) and crb <= inst.crb_max_m2 * (1 + CRB_RTOL),
        "association_ok": bool((beams_per_user == 1).all()),
        "receiver_silent": float(power[receiver]) <= silent,
        "rs_psd": herm_err <= silent and min_eig >= -silent,
    }
    total = float(power.sum())
    out: dict[str, Any] = {
        "objective": total,
        "total_power_w": total,
        "power_w": power.tolist(),
        "p_max_w": p_max,
        "sinr_db": lin_to_db(gamma).tolist(),
        "sinr_min_db": inst.sinr_min_db.tolist(),
        "crb_position_m2": crb,
        "crb_max_m2": inst.crb_max_m2,
        "receiver": receiver,
        "association": serving_bs(W).tolist(),
        "rs_min_eig_w": min_eig,
    }
    out.update(checks)
    out["feasible"] = all(checks.values())
    return out
