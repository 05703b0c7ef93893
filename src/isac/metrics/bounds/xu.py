r"""001 (Xu et al.), Proposition 1: bistatic/multistatic target-location CRLB.

System (Sec. II-C of 001). :math:`S` BSs with the same :math:`N`-element ULA
(:func:`isac.scenario.arrays.xu_ula`, :math:`[\mathbf a(\theta)]_n=e^{-j\pi n\sin\theta}`,
not normalised). BS :math:`s` receives, every other BS :math:`s'` transmits
:math:`\mathbf x_{s'}[l]` with sample covariance
:math:`\mathbf C_{s'}=\sum_k a_{s',k}\mathbf w_{s',k}\mathbf w_{s',k}^H+\mathbf R_{s'}` (eq. (2)).
The echo at the receiver is eq. (6),

.. math::

    \mathbf y_{r,s}[l] = \sum_{s'\ne s}\alpha_{s,s'}\,\mathbf a(\theta_s)\mathbf a^H(\theta_{s'})
        \,\mathbf x_{s'}[l-\tau_{s,s'}] + \mathbf z_{r,s}[l],

where :math:`\theta_b` is the angle of the target seen from BS :math:`b` (AoA
for the receiver, AoD for a transmitter). Signals of different BSs are
independent (their symbols are), so the stacked transmit vector
:math:`\mathbf x=[\mathbf x_1;\dots;\mathbf x_S]` has block-diagonal covariance
:math:`\mathrm{blkdiag}(\mathbf C_1,\dots,\mathbf C_S)` with the receiver's block
set to zero, and :math:`\mathbf y = \mathbf G\mathbf x+\mathbf z` with
:math:`\mathbf G=\mathbf b\,[\alpha_{s,1}\mathbf a_1^H,\dots,\alpha_{s,S}\mathbf a_S^H]`,
:math:`\mathbf b=\mathbf a(\theta_s)`. This is the linear Gaussian model of
:mod:`isac.metrics.fim`.

How the bound is built (equal to eq. (7) with (33)-(39)):

1. FIM over :math:`\boldsymbol\omega=[\theta_1,\dots,\theta_S]` (one angle per BS)
   and the nuisance gains :math:`[\Re\alpha_{s,1..S},\Im\alpha_{s,1..S}]`
   (:func:`xu_fim`, :math:`3S\times3S`, via the engine with factored derivatives);
2. Schur complement over the gains (:func:`xu_angle_information`);
3. :func:`isac.metrics.fim.change_of_variables` with
   :math:`T_{bj}=\partial\theta_b/\partial p_j` (:func:`angle_jacobian`) gives the
   :math:`2\times2` position FIM; :math:`\mathrm{CRLB}=\mathrm{tr}(\mathbf J_{\mathbf p}^{-1})`.

Since the gains are not touched by the change of variables, Schur complement and
change of variables commute, so this equals the paper's order (FIM over
:math:`[\mathbf p,\boldsymbol\alpha_s]` first, eq. (29), then the Schur complement, eq. (7)).

Decisions (documented ambiguities of 001):

* **Delay term.** Eq. (30)-(32) add :math:`-\dot\tau^{(i)}_{s,s'}\mathbf G_{s,s'}` to
  :math:`\dot{\mathbf G}^{(i)}_{s,s'}`. That term is :math:`\alpha_{s,s'}\mathbf G_{s,s'}\mathbf X_{s,s'}`
  times a real number, i.e. it lies in the span of the derivatives w.r.t.
  :math:`\Re\alpha_{s,s'},\Im\alpha_{s,s'}`, so the Schur complement over the gains
  removes it exactly: the CRLB (7) does not depend on it. It is omitted here
  (the test implements the printed formula *with* it and checks equality).
  The same holds for any dependence of :math:`\alpha_{s,s'}` on the position (path loss).
* **First line of (34)** carries :math:`2L/\sigma^2` although the vectorised form
  already sums over the L samples; the second line (with the sample covariance)
  is the correct one and is what the engine computes.
* **Cross-BS terms.** (34)-(39) keep only :math:`s'=s''` terms, i.e. assume
  :math:`\mathbf X_{s,s'}\mathbf X_{s,s''}^H=\mathbf 0` for :math:`s'\ne s''` (independent
  signals). We use the same block-diagonal covariance.
* **Array orientation.** 001 does not say how each ULA is oriented. Each BS has an
  in-plane array axis :math:`\mathbf u_b` (unit vector); :math:`\theta_b` is measured
  from broadside, :math:`\sin\theta_b=\mathbf u_b^T(\mathbf p-\mathbf q_b)/\|\mathbf p-\mathbf q_b\|`,
  :math:`\theta_b\in[-\pi/2,\pi/2]` (as :func:`isac.scenario.geometry.angle_from_broadside`).
* **Silent links.** A transmitting BS that radiates nothing towards the target
  (:math:`\mathbf a^H(\theta_{s'})\mathbf C_{s'}\mathbf a(\theta_{s'})=0`) carries no
  information and its gain is unidentifiable; its rows of the FIM are then zero
  and it is dropped from the Schur complement (pseudo-inverse), as is the unused
  gain "receiver to itself".

Shapes (leading ``...`` batch dimensions broadcast): ``bs_positions_m [..., S, 2]``,
``array_axes [..., S, 2]``, ``target_position_m [..., 2]`` (float64, metres);
``gains [..., S, S]`` complex128 with ``gains[..., s, t]`` = :math:`\alpha_{s,t}`
(receiver s, transmitter t; the diagonal is never used); ``covariance [..., S, N, N]``
or ``beams [..., S, N, M]`` complex128 per BS; ``receiver`` an int or an integer
tensor ``[...]``. Noise power in watts.
"""

from __future__ import annotations

import torch

from isac.metrics.fim import (
    FactoredDerivatives,
    change_of_variables,
    crb_matrix,
    crb_trace,
    fisher_information,
    schur_complement,
)
from isac.scenario.arrays import ULA
from isac.tensors import COMPLEX, DTypeError, as_complex, as_real

SILENT_LINK_RTOL = 1e-12
r"""A gain whose FIM diagonal is at most this fraction of the largest gain diagonal
counts as unidentifiable (silent link) and is dropped from the Schur complement."""


SINGULAR_RTOL = 1e-10
r"""A position FIM whose eigenvalue ratio is at most this is singular (the CRLB is +inf)."""


# --- geometry -----------------------------------------------------------------


def _broadside_normal(axes: torch.Tensor) -> torch.Tensor:
    """Unit broadside normal ``v = rot90(u)`` of each unit axis ``u`` ``[..., 2]``."""
    return torch.stack([-axes[..., 1], axes[..., 0]], dim=-1)


def _unit(axes: torch.Tensor) -> torch.Tensor:
    return axes / torch.linalg.vector_norm(axes, dim=-1, keepdim=True)


def bs_angles(bs_positions_m, array_axes, target_position_m) -> torch.Tensor:
    r"""Angle from broadside :math:`\theta_b\in[-\pi/2,\pi/2]` of the target at every BS, ``[..., S]`` (rad).

    :math:`\theta_b=\mathrm{atan2}(\mathbf u_b^T\mathbf d_b,\,|\mathbf v_b^T\mathbf d_b|)`
    with :math:`\mathbf d_b=\mathbf p-\mathbf q_b` and :math:`\mathbf v_b` the broadside
    normal; identical to ``asin(u^T d / |d|)`` but well conditioned at end-fire.
    """
    q = as_real(bs_positions_m, "bs_positions_m")
    u = _unit(as_real(array_axes, "array_axes"))
    p = as_real(target_position_m, "target_position_m")
    d = p.unsqueeze(-2) - q
    v = _broadside_normal(u)
    return torch.atan2((u * d).sum(-1), (v * d).sum(-1).abs())


def angle_jacobian(bs_positions_m, array_axes, target_position_m) -> torch.Tensor:
    r""":math:`T_{bj}=\partial\theta_b/\partial p_j` ``[..., S, 2]`` (rad/m), closed form.

    With :math:`\mathbf d=\mathbf p-\mathbf q_b`, :math:`\sigma=\mathrm{sign}(\mathbf v_b^T\mathbf d)`:
    :math:`\nabla_{\mathbf p}\theta_b=\sigma\,[(\mathbf v_b^T\mathbf d)\mathbf u_b-(\mathbf u_b^T\mathbf d)\mathbf v_b]/\|\mathbf d\|^2`.
    """
    q = as_real(bs_positions_m, "bs_positions_m")
    u = _unit(as_real(array_axes, "array_axes"))
    p = as_real(target_position_m, "target_position_m")
    d = p.unsqueeze(-2) - q
    v = _broadside_normal(u)
    vd = (v * d).sum(-1, keepdim=True)
    ud = (u * d).sum(-1, keepdim=True)
    sign = torch.where(vd < 0, -torch.ones_like(vd), torch.ones_like(vd))
    r2 = (d * d).sum(-1, keepdim=True)
    return sign * (vd * u - ud * v) / r2


# --- FIM ----------------------------------------------------------------------


def _receiver_onehot(receiver, num_bs: int, device) -> torch.Tensor:
    r = torch.as_tensor(receiver, dtype=torch.long, device=device)
    if bool(((r < 0) | (r >= num_bs)).any()):
        raise ValueError(f"receiver index out of range [0, {num_bs - 1}]: {receiver}")
    return torch.nn.functional.one_hot(r, num_bs).to(torch.float64)  # [..., S]


def xu_derivatives(array: ULA, theta_rad, gains, receiver) -> FactoredDerivatives:
    r"""Factored :math:`\partial\mathbf G/\partial\eta_p` for :math:`\boldsymbol\eta=[\theta_{1..S},\Re\alpha_{s,1..S},\Im\alpha_{s,1..S}]`.

    ``G [..., N, S*N]`` acts on the stacked transmit vector; two rank-one terms per parameter:

    * receiver angle :math:`\theta_s`: :math:`\dot{\mathbf b}\,\mathbf c^H`, :math:`\mathbf c=[\alpha^*_{s,t}\mathbf a_t]_t` (zero block t = s);
    * transmitter angle :math:`\theta_t`: :math:`\alpha_{s,t}\mathbf b\,\dot{\mathbf a}_t^H\mathbf E_t^T`;
    * :math:`\Re\alpha_{s,t}`: :math:`\mathbf b\,\mathbf a_t^H\mathbf E_t^T`; :math:`\Im\alpha_{s,t}`: :math:`j\,\mathbf b\,\mathbf a_t^H\mathbf E_t^T`,

    where :math:`\mathbf E_t` embeds block t. Parameters of the receiver's own link are zero.

    Args:
        array: the ULA of every BS (transmit and receive, as in 001).
        theta_rad: ``[..., S]`` angle of the target at each BS.
        gains: ``[..., S, S]`` complex, ``gains[..., s, t]`` = :math:`\alpha_{s,t}`.
        receiver: int or ``[...]`` integer tensor, index s of the receiving BS.

    Returns:
        :class:`FactoredDerivatives` with ``left [..., 3S, 2, N]``, ``right [..., 3S, 2, S*N]``.
    """
    theta = as_real(theta_rad, "theta_rad")
    gains = as_complex(gains, "gains")
    S = theta.shape[-1]
    N = array.size
    rx = _receiver_onehot(receiver, S, theta.device)
    tx = 1.0 - rx  # [..., S]
    a, da = array.steering_and_derivative(theta)  # [..., S, N]
    batch = torch.broadcast_shapes(theta.shape[:-1], gains.shape[:-2], rx.shape[:-1])
    a, da = a.expand(*batch, S, N), da.expand(*batch, S, N)
    rx, tx = rx.expand(*batch, S), tx.expand(*batch, S)
    gains = gains.expand(*batch, S, S)
    rxc, txc = rx.to(COMPLEX), tx.to(COMPLEX)
    b = (rxc[..., None] * a).sum(-2)  # [..., N] receiver steering
    db = (rxc[..., None] * da).sum(-2)
    # alpha_{s,t} for the chosen receiver s: [..., S] over t, zero at t = s.
    alpha = (rxc[..., :, None] * gains).sum(-2) * txc
    eye = torch.eye(S, dtype=COMPLEX, device=theta.device)

    def embed(vec: torch.Tensor) -> torch.Tensor:
        """``vec [..., S, N]`` (one vector per block t) -> ``[..., S, S*N]`` placed in block t."""
        return (eye[:, :, None] * vec[..., None, :]).reshape(*vec.shape[:-2], S, S * N)

    c = (alpha.conj()[..., None] * a).reshape(*batch, S * N)  # stacked alpha* a, zero receiver block
    zero_l = torch.zeros(*batch, S, N, dtype=COMPLEX, device=theta.device)
    # angle parameters: term 1 (receiver), term 2 (transmitter)
    ang_left = torch.stack([rxc[..., None] * db[..., None, :], txc[..., None] * b[..., None, :]], dim=-2)
    ang_right = torch.stack(
        [c[..., None, :].expand(*batch, S, S * N), embed(alpha.conj()[..., None] * da)], dim=-2
    )
    gain_right = torch.stack([embed(a), torch.zeros(*batch, S, S * N, dtype=COMPLEX, device=theta.device)], dim=-2)
    re_left = torch.stack([txc[..., None] * b[..., None, :], zero_l], dim=-2)
    left = torch.cat([ang_left, re_left, 1j * re_left], dim=-3)
    right = torch.cat([ang_right, gain_right, gain_right], dim=-3)
    return FactoredDerivatives(left, right)


def stacked_covariance(covariance=None, beams=None, receiver=None) -> torch.Tensor:
    r"""Block-diagonal covariance ``[..., S*N, S*N]`` of the stacked transmit vector.

    Give per-BS ``covariance [..., S, N, N]`` (:math:`\mathbf C_t`, eq. (2)) or
    ``beams [..., S, N, M]`` (:math:`\mathbf C_t=\mathbf B_t\mathbf B_t^H`). With
    ``receiver`` given, the receiver's block is set to zero (it does not transmit).
    """
    if (covariance is None) == (beams is None):
        raise ValueError("give exactly one of covariance or beams")
    if covariance is not None:
        c = covariance
        if c.dtype != COMPLEX:
            raise DTypeError(f"covariance: expected complex128, got {c.dtype}")
    else:
        if beams.dtype != COMPLEX:
            raise DTypeError(f"beams: expected complex128, got {beams.dtype}")
        c = beams @ beams.conj().transpose(-2, -1)
    S, N = c.shape[-3], c.shape[-1]
    if receiver is not None:
        tx = 1.0 - _receiver_onehot(receiver, S, c.device)
        c = c * tx.to(COMPLEX)[..., None, None]
    eye = torch.eye(S, dtype=COMPLEX, device=c.device)
    big = eye[:, None, :, None] * c.unsqueeze(-2)  # [..., S, N, S, N]: delta_st C_s[i, j]
    return big.reshape(*big.shape[:-4], S * N, S * N)


def xu_fim(array: ULA, theta_rad, gains, receiver, *, covariance=None, beams=None,
           snapshots, noise_power_w) -> torch.Tensor:
    r"""FIM ``[..., 3S, 3S]`` over :math:`[\theta_{1..S},\Re\alpha_{s,1..S},\Im\alpha_{s,1..S}]` (engine, eq. (28)).

    ``covariance [..., S, N, N]`` or ``beams [..., S, N, M]`` per BS; the receiver's block is ignored.
    """
    d = xu_derivatives(array, theta_rad, gains, receiver)
    r = stacked_covariance(covariance=covariance, beams=beams, receiver=receiver)
    return fisher_information(d, covariance=r, snapshots=snapshots, noise_power_w=noise_power_w)


def xu_angle_information(fim: torch.Tensor) -> torch.Tensor:
    r"""Equivalent FIM ``[..., S, S]`` of the angles after the Schur complement over the gains.

    Gains of silent links (FIM diagonal :math:`\le` ``SILENT_LINK_RTOL`` times the
    largest gain diagonal; their rows are then zero too) get a unit diagonal so that
    they decouple: this is the pseudo-inverse Schur complement.
    """
    P = fim.shape[-1]
    S = P // 3
    diag = fim.diagonal(dim1=-2, dim2=-1)[..., S:]
    scale = diag.amax(-1, keepdim=True)
    silent = diag <= SILENT_LINK_RTOL * scale
    pad = torch.zeros_like(fim.diagonal(dim1=-2, dim2=-1))
    pad = torch.cat([pad[..., :S], silent.to(fim.dtype)], dim=-1)
    fixed = fim + torch.diag_embed(pad)
    return schur_complement(fixed, list(range(S)), list(range(S, P)))


def xu_position_fim(array: ULA, bs_positions_m, array_axes, target_position_m, gains, receiver, *,
                    covariance=None, beams=None, snapshots, noise_power_w) -> torch.Tensor:
    r"""Position FIM :math:`\mathbf J_{\mathbf p}` ``[..., 2, 2]`` (1/m^2), the matrix inverted in eq. (7)."""
    theta = bs_angles(bs_positions_m, array_axes, target_position_m)
    fim = xu_fim(array, theta, gains, receiver, covariance=covariance, beams=beams,
                 snapshots=snapshots, noise_power_w=noise_power_w)
    j_theta = xu_angle_information(fim)
    T = angle_jacobian(bs_positions_m, array_axes, target_position_m)
    return change_of_variables(j_theta, T.expand(*j_theta.shape[:-2], *T.shape[-2:]))


def xu_position_crb(array: ULA, bs_positions_m, array_axes, target_position_m, gains, receiver, *,
                    covariance=None, beams=None, snapshots, noise_power_w) -> torch.Tensor:
    r"""CRB matrix :math:`\mathbf J_{\mathbf p}^{-1}` ``[..., 2, 2]`` (m^2) of the target position."""
    return crb_matrix(xu_position_fim(array, bs_positions_m, array_axes, target_position_m, gains, receiver,
                                      covariance=covariance, beams=beams, snapshots=snapshots,
                                      noise_power_w=noise_power_w))


def xu_crlb(array: ULA, bs_positions_m, array_axes, target_position_m, gains, receiver, *,
            covariance=None, beams=None, snapshots, noise_power_w) -> torch.Tensor:
    r""":math:`\mathrm{CRLB}^{(s)}(\mathbf p)=\mathrm{tr}(\mathbf J_{\mathbf p}^{-1})` ``[...]`` in m^2 (eq. (7)); +inf if singular.

    Singular includes numerically singular: :math:`\lambda_{\min}(\mathbf J_{\mathbf p})\le`
    :data:`SINGULAR_RTOL` :math:`\cdot\lambda_{\max}`. This happens when every transmitter's covariance
    is rank one: each AoD is then absorbed into its link gain, only the receiver's AoA is left, and
    round-off used to give a finite 1e13-1e17 m^2 instead of +inf.
    """
    J = xu_position_fim(array, bs_positions_m, array_axes, target_position_m, gains, receiver,
                        covariance=covariance, beams=beams, snapshots=snapshots, noise_power_w=noise_power_w)
    ev = torch.linalg.eigvalsh(0.5 * (J + J.transpose(-2, -1)))
    singular = ev[..., 0] <= SINGULAR_RTOL * ev[..., -1].abs()
    tr = crb_trace(J)
    return torch.where(singular, torch.full_like(tr, float("inf")), tr)


__all__ = [
    "SILENT_LINK_RTOL", "SINGULAR_RTOL", "angle_jacobian", "bs_angles", "stacked_covariance", "xu_angle_information",
    "xu_crlb", "xu_derivatives", "xu_fim", "xu_position_crb", "xu_position_fim",
]
