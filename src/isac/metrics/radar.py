r"""Radar detection metrics of 000 (Li et al.), Sec. III-A: radar SNR and detection probability.

Model (000 eqs. (9)-(18)). BS :math:`k` transmits :math:`\mathbf x_k=\mathbf W_k\mathbf s_k`
with :math:`\mathbb E\{\mathbf s_k\mathbf s_k^H\}=\mathbf I`; a point target with RCS
:math:`\alpha_t\sim\mathcal{CN}(0,\sigma_t^2)` at angle :math:`\phi` returns
:math:`\alpha_t\,\mathbf g\mathbf g^H\mathbf W_k\mathbf s_k`. After the receive
beamformer :math:`\frac1{\sqrt M}\mathbf a^H(\phi)` (eq. (10)) the radar SNR is eq. (18),

.. math::

    \Gamma = \frac{\sigma_t^2\,|\tilde\beta|^2\,\|\mathbf g^H\mathbf W_k\|^2}{\sigma_r^2},
    \qquad \mathbf g = \frac{\tilde\beta}{\sqrt M}\mathbf a(\phi).

**The** :math:`\tilde\beta` **question (a known trap of 000).** :math:`\tilde\beta` appears
twice in (18): once inside :math:`\mathbf g` (transmit leg) and once explicitly (receive
leg, from :math:`\frac1{\sqrt M}\mathbf a^H\mathbf g=\tilde\beta`). Both are the same
*one-way amplitude* gain, so the echo power carries :math:`|\tilde\beta|^4`, consistent
with the FIM model (9) where :math:`\mathbf G=\mathbf g\mathbf g^H` carries
:math:`|\tilde\beta|^2` in amplitude. We therefore keep (18) as printed but never store
:math:`\tilde\beta` itself: the one quantity defined is the **round-trip power gain**

.. math::

    \rho \triangleq |\tilde\beta|^4 = \beta_0\,(d/d_0)^{-\varsigma_t}
    \quad(\text{Table 2: } \beta_0=-30\ \mathrm{dB},\ \varsigma_t=3.5),

i.e. 000's path-loss formula for "radar channels" is read as the two-way power gain
(its exponent 3.5 is a two-way, radar-equation-like exponent; read as a one-way
amplitude it would give :math:`d^{-14}` in power and no feasible instance). Hence

.. math::

    \Gamma = \frac{\sigma_t^2\,\rho\,\|\mathbf a^H(\phi)\mathbf W_k\|^2}{M\,\sigma_r^2}.

Detection probability, eq. (17): the statistic is exponential under both hypotheses
with variances :math:`\mu_0` and :math:`\mu_1=\mu_0(1+\Gamma)` (the :math:`1/L` of eq. (14)
cancels in the ratio), so eq. (17) reduces exactly to

.. math::

    P_D = 1 - F_{\chi^2_2}\!\Big(\tfrac{\mu_0}{\mu_1}F^{-1}_{\chi^2_2}(1-P_{FA})\Big)
        = P_{FA}^{\,1/(1+\Gamma)},

which is smooth and differentiable in :math:`\mathbf W_k` through :math:`\Gamma`.

Shapes: steering ``a [..., M]`` complex128, ``W [..., M, S]`` complex128 -> ``[...]`` float64.
"""

from __future__ import annotations

import math

import torch

from isac.tensors import COMPLEX, DTypeError, as_real


def _check(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != COMPLEX:
        raise DTypeError(f"{name}: expected a complex128 tensor, got {getattr(t, 'dtype', type(t).__name__)}")


def beam_power_towards(steering: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    r""":math:`\|\mathbf a^H\mathbf W\|^2 = \mathbf a^H\mathbf W\mathbf W^H\mathbf a` ``[...]`` (float64).

    Args:
        steering: ``a [..., M]`` complex128 (unnormalised ULA vector of 000 eq. (5)).
        W: ``[..., M, S]`` complex128, all S streams of one BS (users then radar).
    """
    _check("steering", steering)
    _check("W", W)
    aw = (steering.conj().unsqueeze(-2) @ W).squeeze(-2)  # [..., S]
    return (aw.real**2 + aw.imag**2).sum(-1)


def radar_snr(
    steering: torch.Tensor,
    W: torch.Tensor,
    *,
    echo_power_gain,
    rcs_variance,
    noise_power_w,
) -> torch.Tensor:
    r"""Radar SNR :math:`\Gamma` of 000 eq. (18) (linear), ``[...]`` float64.

    :math:`\Gamma=\sigma_t^2\rho\,\|\mathbf a^H\mathbf W\|^2/(M\sigma_r^2)` with
    :math:`\rho=|\tilde\beta|^4` the round-trip power gain (see module docstring).

    Args:
        steering: ``a(phi) [..., M]`` complex128, unnormalised (norm :math:`\sqrt M`).
        W: ``[..., M, S]`` complex128 beamformers of the sensing BS.
        echo_power_gain: :math:`\rho` (linear, >= 0), scalar or ``[...]``.
        rcs_variance: :math:`\sigma_t^2` (linear), scalar or ``[...]``.
        noise_power_w: :math:`\sigma_r^2` in watts, scalar or ``[...]``.
    """
    num_antennas = steering.shape[-1]
    rho = as_real(echo_power_gain, "echo_power_gain")
    s_t = as_real(rcs_variance, "rcs_variance")
    s_r = as_real(noise_power_w, "noise_power_w")
    return s_t * rho * beam_power_towards(steering, W) / (num_antennas * s_r)


def detection_probability(snr, false_alarm_probability: float) -> torch.Tensor:
    r""":math:`P_D = P_{FA}^{1/(1+\Gamma)}`, 000 eq. (17) in closed form (see module docstring).

    Args:
        snr: :math:`\Gamma` (linear) ``[...]``, float64.
        false_alarm_probability: :math:`P_{FA}\in(0,1)`.
    """
    p_fa = float(false_alarm_probability)
    if not 0.0 < p_fa < 1.0:
        raise ValueError(f"false_alarm_probability must be in (0, 1), got {p_fa}")
    g = as_real(snr, "snr")
    return torch.exp(math.log(p_fa) / (1.0 + g))
