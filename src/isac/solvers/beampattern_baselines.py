r"""Closed-form baselines for ``beampattern-sinr`` (004): ZF and MRT user beams, null-space sensing.

Both solvers build :math:`\mathbf c_l = \sqrt{p_l}\,\mathbf u_l` with unit-norm directions
:math:`\mathbf u_l` and give the power left over, :math:`P_0-\sum_l p_l`, to a sensing
beamformer confined to the null space of :math:`\mathbf H^H`, so that the sensing streams
cause **no** interference at any user (:math:`\mathbf h_l^H\mathbf S = \mathbf 0`) and the
power constraint holds with equality, :math:`\mathrm{tr}(\mathbf R) = P_0` (004 eq. (11c)).

``zf`` (in the spirit of 004's Benchmark 2, the ZF method of its ref. [33], but closed
form instead of an SDP over the sensing covariance): :math:`\mathbf u_l` are the normalised
columns of :math:`\mathbf H(\mathbf H^H\mathbf H)^{-1}` (no inter-user interference), and

.. math::

    p_l = \frac{\Gamma_0\sigma^2}{|\mathbf h_l^H\mathbf u_l|^2},

the least power meeting :math:`\Gamma_l = \Gamma_0` exactly. Infeasible when
:math:`\sum_l p_l > P_0` or :math:`L > M`.

``mrt``: :math:`\mathbf u_l = \mathbf h_l/\|\mathbf h_l\|`; the powers are the least ones
meeting every :math:`\Gamma_l = \Gamma_0` exactly given the inter-user interference of the
fixed directions, i.e. the solution of the linear system

.. math::

    g_{ll}\,p_l - \Gamma_0\sum_{j\ne l} g_{lj}\,p_j = \Gamma_0\sigma^2,\qquad g_{lj} = |\mathbf h_l^H\mathbf u_j|^2 .

Infeasible when that system has no positive solution (the directions cannot reach
:math:`\Gamma_0` at any power) or :math:`\sum_l p_l > P_0`.

Sensing beamformer (both): with :math:`\mathbf U_\perp` an orthonormal basis of the null
space of :math:`\mathbf H^H` (dimension M - rank H) and a shaping covariance
:math:`\mathbf R_d \succeq 0`,

.. math::

    \mathbf S = c\,[\mathbf U_\perp\mathbf G^{1/2},\ \mathbf 0],\quad
    \mathbf G = \mathbf U_\perp^H\mathbf R_d\mathbf U_\perp,\quad
    c^2 = \frac{P_0 - \sum_l p_l}{\mathrm{tr}\,\mathbf G},

so :math:`\mathbf S\mathbf S^H = c^2\mathbf P_\perp\mathbf R_d\mathbf P_\perp` (zero columns pad
S to M x M). ``sensing_shape`` picks :math:`\mathbf R_d`:

* ``"window"`` (default): :math:`\sum_{n: b(\theta_n)=1}\mathbf a(\theta_n)\mathbf a^H(\theta_n)`,
  the steering outer products over the grid points inside the target windows of eq. (34)
  (a PSD covariance whose pattern is a smoothed copy of :math:`b`); falls back to
  ``"targets"`` when no grid point is inside a window;
* ``"targets"``: :math:`\sum_k\mathbf a(\hat\theta_k)\mathbf a^H(\hat\theta_k)`;
* ``"isotropic"``: :math:`\mathbf I` (power spread evenly over the null space).

If :math:`\mathbf R_d` has (numerically) no energy in the null space, the isotropic choice
is used. The sensing shape ignores the users' beams' own contribution to the pattern;
this is a heuristic, not the MSE-optimal null-space covariance (that needs an SDP).

When the null space is empty (rank H = M, e.g. L = M) the leftover power scales all user
powers up by the same factor instead (S = 0). This keeps the point feasible: scaling every
:math:`p_l` by :math:`t\ge 1` never lowers an SINR. An infeasible outcome still returns a
point (the directions with powers scaled to :math:`P_0`, S = 0) so the evaluator can
report how far the SINRs fall short; its status is INFEASIBLE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

import isac.metrics.problems.beampattern_sinr  # noqa: F401  (registers the evaluator finalize() needs)
from isac.metrics.beampattern import steering_matrix
from isac.scenario.instances.beampattern_sinr import PROBLEM as BEAMPATTERN_SINR
from isac.scenario.instances.beampattern_sinr import BeampatternSinrInstance
from isac.solvers.base import Solver, Status
from isac.solvers.baselines import mrt_directions, zf_directions
from isac.solvers.registry import register_solver, set_default_solver
from isac.tensors import COMPLEX, hermitian

SensingShape = Literal["window", "targets", "isotropic"]
_SHAPES = ("window", "targets", "isotropic")

RANK_RTOL = 1e-10
"""Singular values of H below ``RANK_RTOL * s_max`` count as zero when finding its null space."""


def null_space_basis(H: torch.Tensor) -> torch.Tensor:
    r"""Orthonormal basis ``[M, M - rank H]`` of the null space of :math:`\mathbf H^H` (``H [M, L]``).

    Columns :math:`\mathbf v` satisfy :math:`\mathbf h_l^H\mathbf v = 0` for every user l.
    """
    U, s, _ = torch.linalg.svd(H, full_matrices=True)
    rank = int((s > RANK_RTOL * s.max()).sum()) if s.numel() else 0
    return U[:, rank:]


def _psd_sqrt(G: torch.Tensor) -> torch.Tensor:
    w, V = torch.linalg.eigh(G)
    return (V * w.clamp_min(0.0).sqrt().to(COMPLEX)) @ hermitian(V)


def shaping_covariance(inst: BeampatternSinrInstance, shape: SensingShape) -> torch.Tensor:
    r"""The shaping covariance :math:`\mathbf R_d` ``[M, M]`` for ``shape`` (see the module docstring)."""
    m = inst.num_antennas
    if shape == "isotropic":
        return torch.eye(m, dtype=COMPLEX)
    if shape == "window":
        pts = inst.grid[inst.desired > 0]
        if pts.numel() == 0:
            pts = inst.target_angles_deg
    else:
        pts = inst.target_angles_deg
    A = steering_matrix(inst.array, pts)  # [P, M], rows a_p^T
    return A.transpose(-2, -1) @ A.conj()  # sum_p a_p a_p^H


def null_space_sensing(inst: BeampatternSinrInstance, power_w: float, shape: SensingShape) -> torch.Tensor:
    r"""Sensing beams ``S [M, M]`` in the null space of :math:`\mathbf H^H`, :math:`\|\mathbf S\|_F^2` = ``power_w``.

    Returns zeros when ``power_w <= 0`` or the null space is empty.
    """
    m = inst.num_antennas
    S = torch.zeros(m, m, dtype=COMPLEX)
    U = null_space_basis(inst.H)
    d = U.shape[1]
    if power_w <= 0 or d == 0:
        return S
    Rd = shaping_covariance(inst, shape)
    G = hermitian(U) @ Rd @ U
    tr = float(torch.diagonal(G).real.sum())
    if not tr > 1e-12 * float(torch.diagonal(Rd).real.sum()):
        G, tr = torch.eye(d, dtype=COMPLEX), float(d)
    S[:, :d] = math.sqrt(power_w / tr) * (U @ _psd_sqrt(G))
    return S


def _assemble(inst: BeampatternSinrInstance, directions: torch.Tensor, powers: torch.Tensor, shape: SensingShape):
    """Feasible point from directions and SINR-meeting powers: leftover power to null-space sensing."""
    leftover = inst.power_w - float(powers.sum())
    if null_space_basis(inst.H).shape[1] == 0:
        powers = powers * (inst.power_w / float(powers.sum()))  # no null space: scale the users up
        leftover = 0.0
    S = null_space_sensing(inst, leftover, shape)
    C = directions * powers.sqrt().to(COMPLEX)
    return {"C": C, "S": S}


def _budget_point(inst: BeampatternSinrInstance, directions: torch.Tensor, powers: torch.Tensor):
    """The infeasible fallback: the given directions and relative powers scaled to P0, S = 0."""
    m = inst.num_antennas
    C = directions * (powers * (inst.power_w / float(powers.sum()))).sqrt().to(COMPLEX)
    return {"C": C, "S": torch.zeros(m, m, dtype=COMPLEX)}


def least_sinr_powers(
    H: torch.Tensor, directions: torch.Tensor, sinr_target: float, noise_w: float
) -> torch.Tensor | None:
    r"""Least powers ``[L]`` meeting :math:`\Gamma_l = \Gamma_0` exactly for fixed ``directions [M, L]``.

    Solves :math:`(\mathrm{diag}(\mathbf g) - \Gamma_0\mathbf G_{\rm off})\mathbf p = \Gamma_0\sigma^2\mathbf 1`;
    returns None when no positive solution exists (the SINR target is unreachable).
    """
    g = (hermitian(H) @ directions).abs() ** 2  # g[l, j] = |h_l^H u_j|^2
    diag = torch.diagonal(g)
    A = torch.diag(diag) - sinr_target * (g - torch.diag(diag))
    rhs = torch.full_like(diag, sinr_target * noise_w)
    try:
        p = torch.linalg.solve(A, rhs)
    except torch.linalg.LinAlgError:
        return None
    if not bool(torch.isfinite(p).all()) or not bool((p > 0).all()):
        return None
    return p


@dataclass
class _NullSpaceBaseline(Solver):
    sensing_shape: SensingShape = "window"
    """Shaping covariance of the null-space sensing beams: "window", "targets" or "isotropic"."""

    problems: ClassVar[tuple[str, ...]] = (BEAMPATTERN_SINR,)

    def __post_init__(self) -> None:
        if self.sensing_shape not in _SHAPES:
            raise ValueError(f"sensing_shape must be one of {', '.join(_SHAPES)}, got {self.sensing_shape!r}")

    def _directions(self, inst: BeampatternSinrInstance) -> torch.Tensor:
        """Unit-norm user beam directions ``[M, L]``."""
        raise NotImplementedError

    def _solve(self, inst: BeampatternSinrInstance):
        label = self.name.upper()
        U = self._directions(inst)
        p = least_sinr_powers(inst.H, U, inst.sinr_target, inst.noise_w)
        if p is None:
            equal = torch.ones(inst.num_users, dtype=torch.float64)
            msg = (f"{label} directions cannot reach Gamma0 = {inst.sinr_db:g} dB at any power "
                   "(inter-user interference)")
            return Status.INFEASIBLE, msg, _budget_point(inst, U, equal), [], 1
        total = float(p.sum())
        if total > inst.power_w:
            msg = f"{label} needs {total:.6g} W to meet Gamma0 = {inst.sinr_db:g} dB, budget is {inst.power_w:.6g} W"
            return Status.INFEASIBLE, msg, _budget_point(inst, U, p), [], 1
        return Status.CONVERGED, "closed form", _assemble(inst, U, p, self.sensing_shape), [], 1


@register_solver
@dataclass
class BeampatternZF(_NullSpaceBaseline):
    """Zero-forcing user beams at minimum SINR-meeting power, rest to null-space sensing (closed form)."""

    name: ClassVar[str] = "zf"
    description: ClassVar[str] = "ZF user beams meeting Gamma0 exactly + null-space sensing beams (closed form)"

    def _directions(self, inst: BeampatternSinrInstance) -> torch.Tensor:
        return zf_directions(inst.H)

    def _solve(self, inst: BeampatternSinrInstance):
        m, k = inst.num_antennas, inst.num_users
        if k > m:
            return Status.INFEASIBLE, f"zero-forcing needs L <= M users, got L={k}, M={m}", {}, [], 0
        # No inter-user interference: the least powers are Gamma0 sigma^2 / |h_l^H u_l|^2.
        return super()._solve(inst)


@register_solver
@dataclass
class BeampatternMRT(_NullSpaceBaseline):
    """MRT user beams at the least SINR-meeting powers, rest to null-space sensing (closed form)."""

    name: ClassVar[str] = "mrt"
    description: ClassVar[str] = "MRT user beams meeting Gamma0 exactly + null-space sensing beams (closed form)"

    def _directions(self, inst: BeampatternSinrInstance) -> torch.Tensor:
        return mrt_directions(inst.H)


set_default_solver(BEAMPATTERN_SINR, "zf")
