r"""000 (Li et al.), eq. (22) and Appendix A: DoA CRB of one target seen by one BS.

Echo model (000 eq. (9), (19)-(20)), one target :math:`i` of BS :math:`k`, L snapshots:

.. math::

    \mathbf y[l] = \alpha_t\,\mathbf G(\phi)\,\mathbf W_k\mathbf s_k[l] + \mathbf z[l],\qquad
    \mathbf G(\phi)=\mathbf g\mathbf g^H=\frac{\sqrt\rho}{M}\,\mathbf a(\phi)\mathbf a^H(\phi),

with :math:`\mathbf a` the unnormalised ULA vector (eq. (5), :func:`isac.scenario.arrays.li_ula`),
:math:`\rho=|\tilde\beta|^4` the round-trip power gain (see :mod:`isac.metrics.radar` for why
this is the one quantity we define) and :math:`\mathbf z\sim\mathcal{CN}(0,\sigma_r^2\mathbf I)`.
The parameters are :math:`\boldsymbol\xi=[\phi,\Re\alpha_t,\Im\alpha_t]` (eq. (21)); the
derivatives are rank <= 2 and go to :mod:`isac.metrics.fim` in factored form,

.. math::

    \partial_\phi(\alpha_t\mathbf G) = \alpha_t c\,(\dot{\mathbf a}\mathbf a^H+\mathbf a\dot{\mathbf a}^H),\quad
    \partial_{\Re\alpha_t}(\alpha_t\mathbf G) = c\,\mathbf a\mathbf a^H,\quad
    \partial_{\Im\alpha_t}(\alpha_t\mathbf G) = j c\,\mathbf a\mathbf a^H,\qquad c=\sqrt\rho/M,

so :math:`F_{pq}=\frac{2L}{\sigma_r^2}\Re\,\mathrm{tr}(\partial_p\mathbf G\,\mathbf W\mathbf W^H\partial_q\mathbf G^H)`
reproduces the blocks (64)-(66) (with :math:`\frac1L\sum_l\mathbf s\mathbf s^H=\mathbf I`, as 000
assumes), and the CRB of eq. (22) is the Schur complement over :math:`(\Re\alpha_t,\Im\alpha_t)`:

.. math::

    \mathrm{CRB}(\phi)=\big[J_{\phi\phi}-\mathbf J_{\phi\alpha}\mathbf J_{\alpha\alpha}^{-1}\mathbf J_{\phi\alpha}^T\big]^{-1}
    \quad[\mathrm{rad}^2].

Paper typos handled here: Appendix A says :math:`\dot{\mathbf G}` is the derivative w.r.t.
:math:`\theta_{k,i}`; it is w.r.t. the target DoA :math:`\phi_{k,i}`. Eq. (66)'s middle line
carries a spurious :math:`2L\sum_l`; its last line (used here) is right. Other targets of
BS k are treated as known (000 builds :math:`\mathbf J(\boldsymbol\xi_{k,i})` for one target).

Shapes: ``phi_rad [...]`` float64, ``rcs [...]`` complex128, ``echo_power_gain [...]`` float64,
``W [..., M, S]`` complex128 -> FIM ``[..., 3, 3]``, CRB ``[...]``.
"""

from __future__ import annotations

import torch

from isac.metrics.fim import FactoredDerivatives, fisher_information, schur_complement
from isac.scenario.arrays import ULA
from isac.tensors import as_complex, as_real

PARAMETERS = ("phi", "re_alpha", "im_alpha")
"""Order of the FIM rows/columns."""


def li_derivatives(array: ULA, phi_rad, rcs, echo_power_gain) -> FactoredDerivatives:
    """Factored derivatives of :math:`\\alpha_t\\mathbf G(\\phi)` w.r.t. ``[phi, Re alpha, Im alpha]``.

    Returns ``left, right [..., 3, 2, M]`` (two rank-one terms per parameter).
    """
    phi = as_real(phi_rad, "phi_rad")
    alpha = as_complex(rcs, "rcs")
    rho = as_real(echo_power_gain, "echo_power_gain")
    a, da = array.steering_and_derivative(phi)  # [..., M]
    c = (torch.sqrt(rho) / array.size).to(a.dtype)
    shape = torch.broadcast_shapes(a.shape[:-1], alpha.shape, c.shape)
    a, da = a.expand(*shape, a.shape[-1]), da.expand(*shape, a.shape[-1])
    ca = (c * alpha).expand(shape)[..., None]
    c = c.expand(shape)[..., None]
    zero = torch.zeros_like(a)
    left = torch.stack(
        [
            torch.stack([ca * da, ca * a], dim=-2),
            torch.stack([c * a, zero], dim=-2),
            torch.stack([1j * c * a, zero], dim=-2),
        ],
        dim=-3,
    )
    right = torch.stack(
        [torch.stack([a, da], dim=-2), torch.stack([a, zero], dim=-2), torch.stack([a, zero], dim=-2)],
        dim=-3,
    )
    return FactoredDerivatives(left, right)


def li_fim(array: ULA, phi_rad, rcs, echo_power_gain, W, snapshots, noise_power_w) -> torch.Tensor:
    r"""FIM :math:`\mathbf J(\boldsymbol\xi)` ``[..., 3, 3]`` of eq. (21)-(22) for beams ``W [..., M, S]``."""
    d = li_derivatives(array, phi_rad, rcs, echo_power_gain)
    return fisher_information(d, beams=as_complex(W, "W"), snapshots=snapshots, noise_power_w=noise_power_w)


def li_doa_crb(array: ULA, phi_rad, rcs, echo_power_gain, W, snapshots, noise_power_w) -> torch.Tensor:
    r"""DoA CRB of eq. (22) in rad^2, ``[...]``; +inf where the gain block or the Schur complement is singular.

    Args:
        array: the BS ULA (``li_ula(M)``), used for transmit and receive.
        phi_rad: target DoA :math:`\phi` (angle from the array axis, rad), ``[...]``.
        rcs: :math:`\alpha_t` complex, ``[...]``.
        echo_power_gain: round-trip power gain :math:`\rho` (linear), ``[...]``.
        W: ``[..., M, S]`` beamformers of the BS (all streams).
        snapshots: L.
        noise_power_w: :math:`\sigma_r^2` in watts.
    """
    fim = li_fim(array, phi_rad, rcs, echo_power_gain, W, snapshots, noise_power_w)
    # A zero gain block (e.g. W = 0) would make the Schur solve raise for the whole
    # batch; swap those entries for the identity and report +inf there instead.
    det_gain = fim[..., 1, 1] * fim[..., 2, 2] - fim[..., 1, 2] ** 2
    singular = ~(det_gain > 0)
    eye = torch.eye(3, dtype=fim.dtype, device=fim.device)
    safe = torch.where(singular[..., None, None], eye, fim)
    eq = schur_complement(safe, [0], [1, 2])[..., 0, 0]
    bad = singular | ~(eq > 0)
    return torch.where(bad, torch.full_like(eq, float("inf")), 1.0 / torch.where(bad, torch.ones_like(eq), eq))
