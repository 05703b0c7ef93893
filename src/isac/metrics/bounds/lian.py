r"""002 (Lian et al.): squared position error bound (SPEB) of cooperative direct localisation.

System (Sec. II-B). N BSs, each with the same :math:`L = L_x L_z` UPA on the x-z
plane (:func:`isac.scenario.arrays.lian_upa`, eq. (8)), transmit
:math:`\mathbf x_m = \mathbf P_m\mathbf s` and all of them receive the echo of one
point target at :math:`\mathbf t`. BS :math:`n` sees the target at elevation
:math:`\theta_n` (eq. (5)) and azimuth :math:`\beta_n` (eq. (6)); its echo is
eq. (7),

.. math::

    \mathbf y_n = \sum_{m=1}^N \alpha_{m,n}\,\mathbf a(\theta_n,\beta_n)\,
        \mathbf a^H(\theta_m,\beta_m)\,\mathbf x_m + \mathbf n_n .

Stacking the N receivers and transmitters gives the engine's model
:math:`\mathbf y = \mathbf G(\boldsymbol\eta)\mathbf x + \mathbf n` with the
:math:`NL\times NL` matrix :math:`\mathbf G = \mathbf A\odot\mathbf B` of eq. (16):
block :math:`(n, m)` is :math:`\alpha_{m,n}\mathbf a_n\mathbf a_m^H`, and
:math:`\mathbf R_x = \mathbf P\mathbf P^H` with :math:`\mathbf P` the stacked
beams of eq. (12). The real parameters are

.. math::

    \boldsymbol\eta = [\theta_1..\theta_N,\ \beta_1..\beta_N,\
        \Re\alpha_{1,1}, \Re\alpha_{1,2}, .., \Re\alpha_{N,N},\ \Im\alpha_{1,1}, .., \Im\alpha_{N,N}]

(2N angles :math:`\boldsymbol\omega`, then the :math:`N^2` gains in the order of eq. (23),
:math:`\alpha_{m,n}` at position :math:`mN+n`). Every derivative of G is a sum of at
most two rank-one terms, handed to :func:`isac.metrics.fim.fisher_information`:

.. math::

    \partial_{\theta_n}\mathbf G =
        (\mathbf e_n\otimes\dot{\mathbf a}_n)\,\mathbf b_n^H
        + \Big(\textstyle\sum_{n'}\alpha_{n,n'}\mathbf e_{n'}\otimes\mathbf a_{n'}\Big)
          (\mathbf e_n\otimes\dot{\mathbf a}_n)^H,
    \qquad \mathbf b_n = \textstyle\sum_m \alpha_{m,n}^*\,\mathbf e_m\otimes\mathbf a_m,

(receive side, then transmit side; :math:`\beta_n` likewise) and
:math:`\partial_{\Re\alpha_{m,n}}\mathbf G = (\mathbf e_n\otimes\mathbf a_n)(\mathbf e_m\otimes\mathbf a_m)^H`,
:math:`\partial_{\Im\alpha_{m,n}}\mathbf G = j\,\partial_{\Re\alpha_{m,n}}\mathbf G`.

Then (Appendix A) the equivalent FIM of the angles is the Schur complement
eq. (52), :math:`\mathbf J_e=\mathbf J_{\omega\omega}-\mathbf J_{\omega\alpha}\mathbf J_{\alpha\alpha}^{-1}\mathbf J_{\omega\alpha}^T`,
the position FIM is eq. (28), :math:`\mathbf J=\mathbf Q^T\mathbf J_e\mathbf Q` with the
Jacobian :math:`\mathbf Q=\partial\boldsymbol\omega/\partial\mathbf t` of eq. (29)-(31)
(3-D position, as in the paper), and SPEB :math:`=\mathrm{tr}(\mathbf J^{-1})` (eq. (19)), in m².

Two models of the equivalent FIM (``model=``):

* ``"exact"`` (default): the Schur complement (52) itself, computed by the engine.
* ``"eq20"``: the closed form printed as eq. (20)-(21). Its derivation uses
  :math:`\mathbf{XY}(\mathbf Y^H\mathbf X^H\mathbf{XY})^\dagger\mathbf Y^H\mathbf X^H=\mathbf X(\mathbf X^H\mathbf X)^\dagger\mathbf X^H`,
  which needs :math:`\mathbf Y` to have full row rank and does not hold for the
  :math:`(K+1)`-stream transmit signal; (20) projects every stream onto the
  complement of :math:`\mathrm{span}\{\mathbf e_n\otimes\mathbf a_n\}` (the range of
  :math:`\tilde{\mathbf A}`, eq. (22)), which discards the transmit-angle information.
  It equals the exact EFIM when :math:`\mathbf R_x` has rank one and is never larger
  otherwise (:math:`\mathbf J_{e,20}\preceq\mathbf J_e`, so its SPEB is an upper bound
  of the exact one). It is the exact Schur complement of a model in which the
  echo of every stream at every receiver has its own unknown complex amplitude
  :math:`c_{n,s}=\mathbf b_n^H\mathbf p_s`; that is how it is computed here, on the
  same engine (``G' = G P`` with identity stream covariance).

Snapshots: eq. (20) has no snapshot count (the appendix divides the sample sum
by T); ``snapshots`` multiplies the FIM by L, so ``snapshots=1`` is eq. (20).

Shapes (leading ``...`` broadcast): ``bs_positions_m [..., N, 3]``,
``target_position_m [..., 3]`` (float64, metres), ``alpha [..., N, N]`` complex128 with
``alpha[..., m, n]`` = :math:`\alpha_{m,n}` (transmitter m, receiver n),
beams ``W [..., N, L, S]`` complex128 (per-BS beams, stacked here to ``[..., NL, S]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from isac.metrics.fim import (
    FactoredDerivatives,
    change_of_variables,
    crb_trace,
    fisher_information,
    schur_complement,
)
from isac.scenario.arrays import UPA
from isac.tensors import COMPLEX, as_complex, as_real

SpebModel = Literal["exact", "eq20"]
SPEB_MODELS = ("exact", "eq20")


def target_angles(bs_positions_m, target_position_m) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Elevation :math:`\theta_n` (eq. (5)) and azimuth :math:`\beta_n` (eq. (6)) of the target at every BS.

    Eq. (6) written as :math:`\mathrm{atan2}(t_y-b_y, t_x-b_x)` (same angle modulo
    :math:`2\pi`, which the steering vector cannot tell apart).

    Returns: ``theta_rad, beta_rad [..., N]`` float64.
    """
    b = as_real(bs_positions_m, "bs_positions_m")
    t = as_real(target_position_m, "target_position_m")
    d = t[..., None, :] - b
    dist = torch.linalg.vector_norm(d, dim=-1)
    theta = torch.asin(d[..., 2] / dist)
    beta = torch.atan2(d[..., 1], d[..., 0])
    return theta, beta


def angle_jacobian(bs_positions_m, target_position_m) -> torch.Tensor:
    r"""Jacobian :math:`\mathbf Q=\partial\boldsymbol\omega/\partial\mathbf t` ``[..., 2N, 3]`` of eq. (29)-(31).

    Rows: :math:`\theta_1..\theta_N` then :math:`\beta_1..\beta_N`. Eq. (30) is
    garbled in the text; its rows are :math:`\partial\theta_n/\partial\mathbf t =
    [-\Delta_x\Delta_z, -\Delta_y\Delta_z, (d^n_{xy})^2]/(d_n^2 d^n_{xy})` with
    :math:`\Delta = \mathbf t-\mathbf b^n` (the derivative of eq. (5)); eq. (31) as printed.
    """
    b = as_real(bs_positions_m, "bs_positions_m")
    t = as_real(target_position_m, "target_position_m")
    d = t[..., None, :] - b
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    dxy2 = dx**2 + dy**2
    dxy = torch.sqrt(dxy2)
    d2 = dxy2 + dz**2
    den = d2 * dxy
    dtheta = torch.stack([-dx * dz / den, -dy * dz / den, dxy2 / den], dim=-1)
    dbeta = torch.stack([-dy / dxy2, dx / dxy2, torch.zeros_like(dx)], dim=-1)
    return torch.cat([dtheta, dbeta], dim=-2)


def stack_beams(W: torch.Tensor) -> torch.Tensor:
    """Per-BS beams ``[..., N, L, S]`` -> joint-transmission beams ``[..., N*L, S]`` (eq. (12))."""
    return W.reshape(*W.shape[:-3], W.shape[-3] * W.shape[-2], W.shape[-1])


def _embed(v: torch.Tensor) -> torch.Tensor:
    """``v [..., N, L]`` -> ``[..., N, N*L]``: row n is e_n kron v_n (block n of a stacked vector)."""
    n = v.shape[-2]
    eye = torch.eye(n, dtype=v.dtype, device=v.device)
    return (eye[..., :, :, None] * v[..., None, :, :]).reshape(*v.shape[:-2], n, n * v.shape[-1])


def _steering(array: UPA, bs_positions_m, target_position_m):
    theta, beta = target_angles(bs_positions_m, target_position_m)
    return array.steering_and_derivatives(theta, beta)  # each [..., N, L]


def lian_derivatives(array: UPA, bs_positions_m, target_position_m, alpha) -> FactoredDerivatives:
    r"""Factored :math:`\partial\mathbf G/\partial\boldsymbol\eta`, ``P = 2N + 2N^2`` parameters, 2 terms each.

    Vectors have length NL (stacked BSs). See the module docstring for the formulas.
    """
    alpha = as_complex(alpha, "alpha")
    a, da_t, da_b = _steering(array, bs_positions_m, target_position_m)
    n, length = a.shape[-2], a.shape[-1]
    batch = torch.broadcast_shapes(a.shape[:-2], alpha.shape[:-2])
    a = a.expand(*batch, n, length)
    da_t = da_t.expand(*batch, n, length)
    da_b = da_b.expand(*batch, n, length)
    alpha = alpha.expand(*batch, n, n)
    ea = _embed(a)  # [..., N, NL]: e_n kron a_n
    # b_n = sum_m conj(alpha_{m,n}) e_m kron a_m  -> [..., n, NL]
    b = (alpha.transpose(-2, -1).conj()[..., :, :, None] * a[..., None, :, :]).reshape(*batch, n, n * length)
    # transmit-side left vectors: sum_{n'} alpha_{n,n'} e_{n'} kron a_{n'} -> [..., n, NL]
    c = (alpha[..., :, :, None] * a[..., None, :, :]).reshape(*batch, n, n * length)
    angle_left, angle_right = [], []
    for da in (da_t, da_b):
        eda = _embed(da)
        angle_left.append(torch.stack([eda, c], dim=-2))
        angle_right.append(torch.stack([b, eda], dim=-2))
    # gains: p = m*N + n, left = e_n kron a_n, right = e_m kron a_m
    g_left = ea[..., None, :, :].expand(*batch, n, n, n * length).reshape(*batch, n * n, n * length)
    g_right = ea[..., :, None, :].expand(*batch, n, n, n * length).reshape(*batch, n * n, n * length)
    zero = torch.zeros_like(g_left)
    left = torch.cat(angle_left + [torch.stack([g_left, zero], -2), torch.stack([1j * g_left, zero], -2)], dim=-3)
    right = torch.cat(angle_right + [torch.stack([g_right, zero], -2), torch.stack([g_right, zero], -2)], dim=-3)
    return FactoredDerivatives(left, right)


def lian_fim(array: UPA, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w) -> torch.Tensor:
    r"""Full FIM ``[..., 2N+2N^2, 2N+2N^2]`` of :math:`\boldsymbol\eta` (eq. (53) blocks, exact)."""
    d = lian_derivatives(array, bs_positions_m, target_position_m, alpha)
    return fisher_information(d, beams=stack_beams(as_complex(W, "W")), snapshots=snapshots,
                              noise_power_w=noise_power_w)


def _eq20_fim(array: UPA, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w) -> torch.Tensor:
    """FIM of [omega, Re c, Im c] for the per-stream-amplitude model that reproduces eq. (20)."""
    alpha = as_complex(alpha, "alpha")
    Ws = stack_beams(as_complex(W, "W"))  # [..., NL, S]
    a, da_t, da_b = _steering(array, bs_positions_m, target_position_m)
    n, length, s = a.shape[-2], a.shape[-1], Ws.shape[-1]
    batch = torch.broadcast_shapes(a.shape[:-2], alpha.shape[:-2], Ws.shape[:-2])
    a, da_t, da_b = (x.expand(*batch, n, length) for x in (a, da_t, da_b))
    alpha = alpha.expand(*batch, n, n)
    Ws = Ws.expand(*batch, n * length, s)
    b = (alpha.transpose(-2, -1).conj()[..., :, :, None] * a[..., None, :, :]).reshape(*batch, n, n * length)
    bw = b.conj() @ Ws  # [..., n, S]: b_n^H p_s
    right_angle = bw.conj()  # dG'/d omega_n = (e_n kron da_n)(W^H b_n)^H
    ea = _embed(a)
    eye_s = torch.eye(s, dtype=COMPLEX, device=a.device)
    # nuisance (n, s): left e_n kron a_n, right e_s; ordered n*S + s
    c_left = ea[..., :, None, :].expand(*batch, n, s, n * length).reshape(*batch, n * s, n * length)
    c_right = eye_s.expand(*batch, n, s, s).reshape(*batch, n * s, s)
    left = torch.cat([_embed(da_t), _embed(da_b), c_left, 1j * c_left], dim=-2)[..., None, :]
    right = torch.cat([right_angle, right_angle, c_right, c_right], dim=-2)[..., None, :]
    d = FactoredDerivatives(left, right)
    return fisher_information(d, beams=eye_s.expand(*batch, s, s), snapshots=snapshots,
                              noise_power_w=noise_power_w)


def lian_angle_efim(array: UPA, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w,
                    model: SpebModel = "exact") -> torch.Tensor:
    r"""Equivalent FIM :math:`\mathbf J_e(\mathbf P;\boldsymbol\omega)` ``[..., 2N, 2N]`` (eq. (52), or eq. (20) for ``model="eq20"``)."""
    if model not in SPEB_MODELS:
        raise ValueError(f"model must be one of {SPEB_MODELS}, got {model!r}")
    n = as_real(bs_positions_m, "bs_positions_m").shape[-2]
    if model == "exact":
        fim = lian_fim(array, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w)
    else:
        fim = _eq20_fim(array, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w)
    return _angle_efim(fim, n)


def _angle_efim(fim: torch.Tensor, n: int) -> torch.Tensor:
    """Schur complement of the gain block of a full FIM (a pseudo-inverse where that block is singular)."""
    keep, nuisance = range(2 * n), range(2 * n, fim.shape[-1])
    with torch.no_grad():
        ev = torch.linalg.eigvalsh(fim[..., 2 * n:, 2 * n:])
        well_conditioned = bool((ev[..., 0] > _NUISANCE_RCOND * ev[..., -1]).all())
    if well_conditioned:
        return schur_complement(fim, keep, nuisance)
    return _schur_complement_pinv(fim, 2 * n)


_NUISANCE_RCOND = 1e-10
"""Below this eigenvalue ratio the gain block is treated as singular (pseudo-inverse)."""


def _schur_complement_pinv(fim: torch.Tensor, num_keep: int) -> torch.Tensor:
    r"""Schur complement with a pseudo-inverse of a singular nuisance block.

    When :math:`\mathbf R_x` has rank < N, the N gains seen by one receiver are not
    separable (only their combination is), so :math:`\mathbf J_{\alpha\alpha}` is
    singular. For a PSD FIM the columns of :math:`\mathbf J_{\alpha\omega}` lie in the
    range of :math:`\mathbf J_{\alpha\alpha}`, so :math:`\mathbf J_{\omega\alpha}\mathbf J_{\alpha\alpha}^\dagger\mathbf J_{\alpha\omega}`
    is the unique, correct EFIM. Used only when the gain block's eigenvalue ratio is below
    ``_NUISANCE_RCOND`` (where a plain solve would return round-off).
    """
    fkk = fim[..., :num_keep, :num_keep]
    fkn = fim[..., :num_keep, num_keep:]
    fnn = fim[..., num_keep:, num_keep:]
    out = fkk - fkn @ torch.linalg.pinv(fnn, rtol=_NUISANCE_RCOND, hermitian=True) @ fkn.transpose(-2, -1)
    return 0.5 * (out + out.transpose(-2, -1))


def lian_position_fim(array: UPA, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w,
                      model: SpebModel = "exact") -> torch.Tensor:
    r"""Position FIM :math:`\mathbf J(\mathbf P;\mathbf t)=\mathbf Q^T\mathbf J_e\mathbf Q` ``[..., 3, 3]`` (eq. (28)), 1/m²."""
    je = lian_angle_efim(array, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w, model)
    return change_of_variables(je, angle_jacobian(bs_positions_m, target_position_m))


def lian_speb_function(array: UPA, bs_positions_m, target_position_m, alpha, snapshots, noise_power_w,
                       model: SpebModel = "exact") -> Callable[[torch.Tensor], torch.Tensor]:
    """``W -> SPEB`` for a fixed geometry: :func:`lian_speb` with the derivatives of the exact model
    computed once (for many beam sets on the same targets, e.g. a search over a scale). The same
    formulas as :func:`lian_speb`; ``model="eq20"`` simply calls it."""
    if model not in SPEB_MODELS:
        raise ValueError(f"model must be one of {SPEB_MODELS}, got {model!r}")
    if model != "exact":
        return lambda W: lian_speb(array, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w, model)
    n = as_real(bs_positions_m, "bs_positions_m").shape[-2]
    d = lian_derivatives(array, bs_positions_m, target_position_m, alpha)
    jac = angle_jacobian(bs_positions_m, target_position_m)

    def speb(W: torch.Tensor) -> torch.Tensor:
        fim = fisher_information(d, beams=stack_beams(as_complex(W, "W")), snapshots=snapshots,
                                 noise_power_w=noise_power_w)
        return crb_trace(change_of_variables(_angle_efim(fim, n), jac))

    return speb


def lian_speb(array: UPA, bs_positions_m, target_position_m, alpha, W, snapshots, noise_power_w,
              model: SpebModel = "exact") -> torch.Tensor:
    r"""SPEB :math:`\mathrm{tr}(\mathbf J^{-1})` ``[...]`` in m² (eq. (19)); +inf where J is singular."""
    return crb_trace(lian_position_fim(array, bs_positions_m, target_position_m, alpha, W, snapshots,
                                       noise_power_w, model))
