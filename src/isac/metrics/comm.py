r"""SINR and achievable rates, one implementation for every problem family.

Single transmitter (or several BSs jointly transmitting, with channels and
beams stacked over BSs, 002 eq. (3)): user :math:`k` receives
:math:`\mathbf h_k^H\mathbf x` with :math:`\mathbf x = \mathbf W\mathbf s`,
where the first :math:`K` columns of :math:`\mathbf W` are the users' beams and
the remaining :math:`N_s` columns are sensing streams (003 eq. (2), 004 eq. (4)):

.. math::

    \mathrm{SINR}_k = \frac{|\mathbf h_k^H\mathbf w_k|^2}
        {\sum_{j\ne k}|\mathbf h_k^H\mathbf w_j|^2 + \|\mathbf h_k^H\mathbf W_s\|^2 + \sigma_k^2},
    \qquad R_k = \ln(1+\mathrm{SINR}_k)\ \text{nats/s/Hz}.

Shapes: ``H [..., Nt, K]`` (column k is h_k), ``W [..., Nt, K+Ns]``,
``noise_power_w`` scalar, ``[...]`` or ``[..., K]``.
"""

from __future__ import annotations

import torch

from isac.tensors import COMPLEX, DTypeError


def _gains(H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``|h_k^H w_j|^2`` as ``[..., K, K+Ns]``."""
    for name, t in (("H", H), ("W", W)):
        if t.dtype != COMPLEX:
            raise DTypeError(f"{name}: expected complex128, got {t.dtype}")
    if H.shape[-2] != W.shape[-2]:
        raise ValueError(f"H has {H.shape[-2]} antennas but W has {W.shape[-2]}")
    if W.shape[-1] < H.shape[-1]:
        raise ValueError(f"W has {W.shape[-1]} columns, fewer than the {H.shape[-1]} users")
    hw = H.conj().transpose(-2, -1) @ W
    return hw.real**2 + hw.imag**2


def _noise(noise_power_w, like: torch.Tensor) -> torch.Tensor:
    """Noise as ``[...]`` (one value per batch entry, matching ``like.shape[:-1]``) -> ``[..., 1]``;
    a scalar or a ``[..., K]`` tensor broadcasts as is."""
    n = torch.as_tensor(noise_power_w, dtype=torch.float64, device=like.device)
    if n.ndim >= 1 and n.ndim == like.ndim - 1 and tuple(n.shape) == tuple(like.shape[:-1]):
        n = n.unsqueeze(-1)
    return n


def sinr(H: torch.Tensor, W: torch.Tensor, noise_power_w) -> torch.Tensor:
    """Per-user SINR ``[..., K]`` (linear)."""
    g = _gains(H, W)
    k = H.shape[-1]
    signal = torch.diagonal(g[..., :k], dim1=-2, dim2=-1)
    total = g.sum(-1)
    return signal / (total - signal + _noise(noise_power_w, signal))


def rates_nats(H: torch.Tensor, W: torch.Tensor, noise_power_w) -> torch.Tensor:
    """Per-user rate ``[..., K]`` in nats/s/Hz, computed as ln(T_k/(T_k-S_k)).

    The ratio form keeps full relative precision when the SINR is tiny.
    """
    g = _gains(H, W)
    k = H.shape[-1]
    signal = torch.diagonal(g[..., :k], dim1=-2, dim2=-1)
    interference = g.sum(-1) - signal + _noise(noise_power_w, signal)
    return torch.log1p(signal / interference)


def sum_rate_nats(H: torch.Tensor, W: torch.Tensor, noise_power_w) -> torch.Tensor:
    """Sum rate ``[...]`` in nats/s/Hz."""
    return rates_nats(H, W, noise_power_w).sum(-1)


