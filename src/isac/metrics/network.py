r"""Multi-BS rates under user association, 000 (Li et al.) eqs. (8), (23)-(26).

K BSs on orthogonal bands (no inter-BS interference, 000 Sec. II), each with M antennas and
beams :math:`\mathbf W_k=[\mathbf w_{k,1},\dots,\mathbf w_{k,N},\mathbf W_k^r]` (one column per CU,
then the radar streams, eq. (3)). The SINR of CU :math:`i` on BS :math:`k`'s band, eq. (8), counts
*every* other column of :math:`\mathbf W_k` as interference, including beams towards CUs that BS k
does not serve:

.. math::

    \gamma_{k,i}=\frac{|\mathbf h_{k,i}^H\mathbf w_{k,i}|^2}{\sum_{n\ne i}^{N+N_s}|\mathbf h_{k,i}^H\mathbf w_{k,n}|^2+\sigma_i^2}.

This is exactly :func:`isac.metrics.comm.sinr` per BS, so the K x N "SINR matrix" used by 000's UA
step is that function batched over BSs. With the association :math:`u_{k,i}\in\{0,1\}` and the load
:math:`\|\tilde{\mathbf u}_k\|_0=\sum_i u_{k,i}`, BS k's bandwidth B is shared equally among its CUs
(eq. (24)) and

.. math::

    R_i=\sum_k u_{k,i}\frac{B}{\|\tilde{\mathbf u}_k\|_0}\log_2(1+\gamma_{k,i}),\qquad R=\sum_i R_i
    \quad\text{(eqs. (25)-(26))}.

With ``bandwidth=1`` (default) rates are in bit/s/Hz of one BS band, the unit 000 reports; with
``bandwidth`` in Hz they are in bit/s. A BS serving no CU contributes nothing (its load is clamped
to 1 to avoid 0/0; such an association violates (27d) and is flagged by :func:`association_checks`).

Shapes: ``H [..., K, M, N]`` (``H[..., k, :, i]`` is :math:`\mathbf h_{k,i}`), ``W [..., K, M, N+Ns]``,
``association [..., K, N]`` (0/1, float64 or integer), ``noise_power_w`` scalar (watts).
"""

from __future__ import annotations

import torch

from isac.metrics.comm import rates_nats as _rates_nats_single
from isac.metrics.comm import sinr as _sinr_single
from isac.units import LN2


def _noise_like(noise_power_w, like_shape) -> torch.Tensor:
    # comm._noise unsqueezes an [...]-shaped noise; a full [..., K, N] tensor avoids any
    # ambiguity between "per user" and "per batch entry".
    n = torch.as_tensor(noise_power_w, dtype=torch.float64)
    if n.ndim != 0:
        raise ValueError("noise_power_w: expected a scalar (000 uses one sigma_i^2 for all CUs)")
    return n.expand(like_shape)


def _out_shape(H: torch.Tensor, W: torch.Tensor) -> torch.Size:
    batch = torch.broadcast_shapes(H.shape[:-2], W.shape[:-2])
    return torch.Size((*batch, H.shape[-1]))


def sinr_matrix(H: torch.Tensor, W: torch.Tensor, noise_power_w) -> torch.Tensor:
    r""":math:`\gamma_{k,i}` of eq. (8), ``[..., K, N]`` (linear), for every BS/CU pair."""
    return _sinr_single(H, W, _noise_like(noise_power_w, _out_shape(H, W)))


def bs_load(association: torch.Tensor) -> torch.Tensor:
    r""":math:`\|\tilde{\mathbf u}_k\|_0`: number of CUs served by each BS, ``[..., K]`` float64."""
    return torch.as_tensor(association).to(torch.float64).sum(-1)


def rate_matrix_nats(H: torch.Tensor, W: torch.Tensor, association: torch.Tensor, noise_power_w,
                     bandwidth: float = 1.0) -> torch.Tensor:
    r""":math:`u_{k,i}\frac{B}{\|\tilde{\mathbf u}_k\|_0}\ln(1+\gamma_{k,i})` ``[..., K, N]`` (nats/s/Hz for B=1)."""
    u = torch.as_tensor(association).to(torch.float64)
    ln_rates = _rates_nats_single(H, W, _noise_like(noise_power_w, _out_shape(H, W)))
    load = bs_load(u).clamp(min=1.0)[..., None]
    return bandwidth * u * ln_rates / load


def user_rates_nats(H, W, association, noise_power_w, bandwidth: float = 1.0) -> torch.Tensor:
    r""":math:`R_i` of eq. (25) in nats, ``[..., N]``."""
    return rate_matrix_nats(H, W, association, noise_power_w, bandwidth).sum(-2)


def user_rates_bps_hz(H, W, association, noise_power_w, bandwidth: float = 1.0) -> torch.Tensor:
    r""":math:`R_i` of eq. (25) in bit/s/Hz (bit/s when ``bandwidth`` is in Hz), ``[..., N]``."""
    return user_rates_nats(H, W, association, noise_power_w, bandwidth) / LN2


def sum_rate_bps_hz(H, W, association, noise_power_w, bandwidth: float = 1.0) -> torch.Tensor:
    r"""Network sum rate :math:`R` of eq. (26) in bit/s/Hz, ``[...]``."""
    return user_rates_bps_hz(H, W, association, noise_power_w, bandwidth).sum(-1)


def association_checks(association: torch.Tensor) -> dict[str, torch.Tensor]:
    """Constraints (27d)-(27f) of 000, each a bool tensor ``[...]``.

    Keys: ``binary`` (27f), ``one_bs_per_user`` (27e: every CU served by exactly one BS),
    ``every_bs_serves`` (27d: every BS serves at least one CU), ``valid`` (all three).
    """
    u = torch.as_tensor(association).to(torch.float64)
    binary = ((u == 0) | (u == 1)).all(-1).all(-1)
    one = (u.sum(-2) == 1).all(-1)
    serves = (u.sum(-1) >= 1).all(-1)
    return {"binary": binary, "one_bs_per_user": one, "every_bs_serves": serves,
            "valid": binary & one & serves}


def association_objective_bps_hz(sinr, association, bandwidth: float = 1.0) -> torch.Tensor:
    r"""(P2)'s objective (000 eq. (28)) for a given SINR matrix: :math:`B\sum_k\frac1{n_k}\sum_{i:u_{k,i}=1}\log_2(1+\gamma_{k,i})`.

    The SINRs are held fixed (the UA step of 000's Algorithm 3), so this is the sum over BSs of
    the mean rate of each BS's CUs, times B. A BS serving nobody contributes 0 (such a U
    violates (27d); see :func:`association_checks`).

    Args:
        sinr: ``[..., K, N]`` linear SINRs :math:`\gamma_{k,i}` (float64, >= 0).
        association: ``[..., K, N]`` 0/1, or ``[..., N]`` integer BS index per CU.
        bandwidth: B (1: bit/s/Hz).

    Returns:
        ``[...]`` float64.
    """
    g = torch.as_tensor(sinr, dtype=torch.float64)
    u = torch.as_tensor(association)
    if u.ndim == g.ndim - 1:  # BS index per CU -> one-hot [..., K, N]
        u = torch.nn.functional.one_hot(u.to(torch.int64), g.shape[-2]).transpose(-2, -1)
    u = u.to(torch.float64)
    load = bs_load(u).clamp(min=1.0)
    return bandwidth * ((u * torch.log2(1.0 + g)).sum(-1) / load).sum(-1)
