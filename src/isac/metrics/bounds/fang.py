r"""003 (Fang et al.), Lemma 1: FIM of :math:`\boldsymbol\omega=[\boldsymbol\theta,\boldsymbol\phi,\Re\boldsymbol\alpha,\Im\boldsymbol\alpha]`.

Echo model (eq. (3)-(4)): :math:`\mathbf y_s = \mathbf G\mathbf x + \mathbf n_s`,
:math:`\mathbf G=\sum_m \alpha_m\mathbf b(\theta_m,\phi_m)\mathbf a^H(\theta_m,\phi_m) = \mathbf B\mathbf U\mathbf A^H`.
The derivatives are rank <= 2 and are handed to the engine in factored form:

.. math::

    \partial_{\theta_m}\mathbf G = \alpha_m\dot{\mathbf b}_{\theta,m}\mathbf a_m^H + \alpha_m\mathbf b_m\dot{\mathbf a}_{\theta,m}^H,\quad
    \partial_{\Re\alpha_m}\mathbf G = \mathbf b_m\mathbf a_m^H,\quad
    \partial_{\Im\alpha_m}\mathbf G = j\,\mathbf b_m\mathbf a_m^H,

(:math:`\phi` likewise), so :math:`F_{pq}=\frac{2L}{\sigma_s^2}\Re\,\mathrm{tr}(\partial_p\mathbf G\,\mathbf R_x\,\partial_q\mathbf G^H)`
is eq. (10), whose block form is eq. (8)-(9). The sensing metric of 003 and of
its published code is :math:`\mathrm{tr}(\mathbf F^{-1})` over all 4M parameters.

Shapes: ``theta_rad, phi_rad [..., M]`` (float64), ``alpha [..., M]`` (complex128),
``W [..., Nt, S]`` -> ``F [..., 4M, 4M]``.
"""

from __future__ import annotations

import torch

from isac.metrics.fim import FactoredDerivatives, crb_trace, fisher_information
from isac.scenario.arrays import UPA
from isac.tensors import as_complex, as_real


def fang_derivatives(tx: UPA, rx: UPA, theta_rad, phi_rad, alpha) -> FactoredDerivatives:
    """Factored derivatives of G w.r.t. [theta, phi, Re alpha, Im alpha] (4M parameters, 2 terms each)."""
    theta = as_real(theta_rad, "theta_rad")
    phi = as_real(phi_rad, "phi_rad")
    alpha = as_complex(alpha, "alpha")
    a, da_t, da_p = tx.steering_and_derivatives(theta, phi)  # [..., M, Nt]
    b, db_t, db_p = rx.steering_and_derivatives(theta, phi)  # [..., M, Nr]
    al = alpha[..., None]
    zero_b = torch.zeros_like(b)
    # left[..., p, r, :] and right[..., p, r, :] with p running over the 4M parameters.
    left = torch.cat(
        [
            torch.stack([al * db_t, al * b], dim=-2),
            torch.stack([al * db_p, al * b], dim=-2),
            torch.stack([b, zero_b], dim=-2),
            torch.stack([1j * b, zero_b], dim=-2),
        ],
        dim=-3,
    )
    zero_a = torch.zeros_like(a)
    right = torch.cat(
        [
            torch.stack([a, da_t], dim=-2),
            torch.stack([a, da_p], dim=-2),
            torch.stack([a, zero_a], dim=-2),
            torch.stack([a, zero_a], dim=-2),
        ],
        dim=-3,
    )
    return FactoredDerivatives(left, right)


def fang_fim(tx: UPA, rx: UPA, theta_rad, phi_rad, alpha, W, snapshots, noise_power_w) -> torch.Tensor:
    """FIM ``[..., 4M, 4M]`` of 003 Lemma 1 for beamformers ``W [..., Nt, S]``."""
    d = fang_derivatives(tx, rx, theta_rad, phi_rad, alpha)
    return fisher_information(d, beams=as_complex(W, "W"), snapshots=snapshots, noise_power_w=noise_power_w)


def fang_crlb_trace(tx: UPA, rx: UPA, theta_rad, phi_rad, alpha, W, snapshots, noise_power_w) -> torch.Tensor:
    r""":math:`\mathrm{tr}(\mathbf F^{-1})` ``[...]`` over all 4M parameters (003's sensing metric)."""
    return crb_trace(fang_fim(tx, rx, theta_rad, phi_rad, alpha, W, snapshots, noise_power_w))
