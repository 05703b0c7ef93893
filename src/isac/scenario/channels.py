r"""Channel models: path loss, Rayleigh and Rician communication channels, LoS
sensing channels, and the estimation errors of 002 (CSI and target position).

Shapes: a single-antenna user's channel from an N-antenna BS is ``[..., N]``;
a collection of K users is ``[..., N, K]`` (column k is h_k, the user receives
:math:`\mathbf h_k^H\mathbf x`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from isac.scenario.random import complex_normal
from isac.tensors import as_complex, as_real


def path_loss(distance_m, reference_gain: float, exponent: float, reference_distance_m: float = 1.0):
    r"""Large-scale power gain :math:`\beta_0 (d/d_0)^{-\varsigma}` (linear)."""
    d = as_real(distance_m, "distance_m")
    if bool((d <= 0).any()):
        raise ValueError("distance_m must be positive")
    return reference_gain * (d / reference_distance_m) ** (-exponent)


def rayleigh(rng: np.random.Generator, shape, gain=1.0) -> torch.Tensor:
    r""":math:`\sqrt{g}\,\mathcal{CN}(0,\mathbf I)` samples of ``shape`` (``gain`` broadcasts)."""
    g = torch.as_tensor(gain, dtype=torch.float64)
    return torch.sqrt(g) * complex_normal(rng, shape)


def rician(rng: np.random.Generator, los: torch.Tensor, rician_factor, gain=1.0) -> torch.Tensor:
    r"""Rician channel :math:`\sqrt{g}\big(\sqrt{\tfrac{\kappa}{1+\kappa}}\bar{\mathbf c} + \sqrt{\tfrac{1}{1+\kappa}}\tilde{\mathbf c}\big)`.

    Args:
        los: LoS component ``[..., N]`` (normalise it as the paper does).
        rician_factor: :math:`\kappa \ge 0` (linear), broadcast to ``[...]``.
        gain: large-scale power gain, broadcast to ``[...]``.
    """
    los = as_complex(los, "los")
    k = torch.as_tensor(rician_factor, dtype=torch.float64)
    if bool((k < 0).any()):
        raise ValueError("rician_factor must be >= 0")
    nlos = complex_normal(rng, los.shape)
    g = torch.as_tensor(gain, dtype=torch.float64)
    w_los = torch.sqrt(k / (1 + k))[..., None]
    w_nlos = torch.sqrt(1 / (1 + k))[..., None]
    return torch.sqrt(g)[..., None] * (w_los * los + w_nlos * nlos)


def los_sensing_channel(rx_steering, tx_steering, gain) -> torch.Tensor:
    r"""Point-target response :math:`\alpha\,\mathbf b\,\mathbf a^H` ``[..., Nr, Nt]``."""
    b = as_complex(rx_steering, "rx_steering")
    a = as_complex(tx_steering, "tx_steering")
    g = as_complex(gain, "gain")
    return g[..., None, None] * b[..., :, None] * a.conj()[..., None, :]


def add_csi_error(rng: np.random.Generator, channel, error_variance, relative: bool = True) -> torch.Tensor:
    r"""Imperfect CSI :math:`\hat{\mathbf h} = \mathbf h + \mathbf e`, :math:`\mathbf e\sim\mathcal{CN}(0,\epsilon\,\mathbf I)`.

    With ``relative=True`` the error variance is :math:`\epsilon` times the mean
    per-entry power of each channel vector (last dimension), so ``error_variance``
    is a normalised MSE; otherwise it is absolute.
    """
    h = as_complex(channel, "channel")
    eps = torch.as_tensor(error_variance, dtype=torch.float64)
    if bool((eps < 0).any()):
        raise ValueError("error_variance must be >= 0")
    if relative:
        eps = eps * (h.abs() ** 2).mean(-1, keepdim=True)
    return h + torch.sqrt(eps) * complex_normal(rng, h.shape)


def perturb_position(rng: np.random.Generator, position, std_m) -> torch.Tensor:
    r"""Estimated position :math:`\hat{\mathbf t} = \mathbf t + \mathbf e`, :math:`\mathbf e\sim\mathcal N(0,\sigma^2\mathbf I)` per axis."""
    t = as_real(position, "position")
    s = float(std_m)
    if s < 0 or not math.isfinite(s):
        raise ValueError("std_m must be a finite non-negative number")
    return t + s * torch.as_tensor(rng.standard_normal(tuple(t.shape)), dtype=torch.float64)
