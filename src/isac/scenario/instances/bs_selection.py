r"""``bs-selection`` (paper 001, Xu et al.): joint receiving-BS selection, user association and beamforming.

S BSs, each with the same N-element ULA (:func:`isac.scenario.arrays.xu_ula`), K
single-antenna users, one point target in the plane. One BS (``receiver``) listens
to the target echoes; the others transmit communication beams and sensing signals
(eq. (1)-(2)). Problem (8) of 001:

.. math::

    \min\ \sum_{s}\Big(\sum_k\|\mathbf w_{s,k}\|^2+\mathrm{tr}\,\mathbf R_s\Big)
    \ \text{s.t.}\ \ \sum_k\|\mathbf w_{s,k}\|^2+\mathrm{tr}\,\mathbf R_s\le P\ \forall s,\quad
    \mathrm{CRLB}^{(s_r)}(\mathbf p)\le\epsilon,\quad \gamma_k\ge\Gamma_k\ \forall k,

each user served by exactly one BS (C4), the receiver :math:`s_r` transmitting nothing (C5, C6).
:math:`\gamma_k` is eq. (5); the CRLB is Proposition 1
(:mod:`isac.metrics.bounds.xu`).

File format (all keys required unless marked optional; indices are 0-based)::

    {"problem": "bs-selection",
     "params": {"num_antennas": N, "snapshots": L, "p_max_dbm": P (per BS),
                "noise_comm_dbm": sigma_c^2 (every user), "noise_sense_dbm": sigma_r^2 (receiving BS),
                "sinr_min_db": [Gamma_1, ..., Gamma_K], "crb_max_m2": epsilon},
     "bs_positions_m": S x 2 real (x, y of each BS),
     "array_axes": S x 2 real (in-plane direction of each ULA's axis; any non-zero length),
     "target_position_m": 2 real,
     "H": S x N x K complex (H[s][:, k] = h_{s,k}; user k receives h_{s,k}^H x_s from BS s),
     "alpha": S x S complex (alpha[s][t] = alpha_{s,t}: gain of the path BS t -> target -> BS s;
              off-diagonal entries non-zero, diagonal zero: a BS does not sense its own signal),
     "user_positions_m": K x 2 real (optional, informational: plots, heuristics)}

The target angle at BS b is measured from the broadside of its ULA,
:math:`\sin\theta_b=\mathbf u_b^T(\mathbf p-\mathbf q_b)/\|\mathbf p-\mathbf q_b\|`
(001 does not state the array orientation; this is our convention).

A solution is ``{"receiver": s_r, "W": S x N x K complex, "Rs": S x N x N complex}``:
``W[s][:, k]`` is :math:`\mathbf w_{s,k}` and the association is implicit,
:math:`a_{s,k}=1` iff :math:`\mathbf w_{s,k}\ne\mathbf 0` (exactly one non-zero beam
per user); ``Rs[s]`` is the Hermitian PSD sensing covariance :math:`\mathbf R_s` (eq. (3)).
``W[s_r]`` and ``Rs[s_r]`` must be zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from isac.scenario.arrays import ULA, xu_ula
from isac.scenario.channels import path_loss
from isac.scenario.io import RESULT_FILE_KEYS, Fields, InstanceError, encode_complex, encode_real
from isac.scenario.problems import ProblemFamily, register_family
from isac.scenario.random import complex_normal, make_rng
from isac.units import db_to_lin, dbm_to_watt

PROBLEM = "bs-selection"
_PARAM_KEYS = ("num_antennas", "snapshots", "p_max_dbm", "noise_comm_dbm", "noise_sense_dbm",
               "sinr_min_db", "crb_max_m2")
SPEED_OF_LIGHT_M_S = 299_792_458.0


@dataclass(frozen=True)
class BsSelectionInstance:
    """One ``bs-selection`` instance.

    Tensors: ``bs_positions_m [S, 2]``, ``array_axes [S, 2]``, ``target_position_m [2]``,
    ``sinr_min_db [K]`` (float64); ``H [S, N, K]``, ``alpha [S, S]`` (complex128);
    ``user_positions_m [K, 2]`` or None.
    """

    problem: ClassVar[str] = PROBLEM

    num_antennas: int
    snapshots: int
    p_max_dbm: float
    noise_comm_dbm: float
    noise_sense_dbm: float
    sinr_min_db: torch.Tensor
    crb_max_m2: float
    bs_positions_m: torch.Tensor
    array_axes: torch.Tensor
    target_position_m: torch.Tensor
    H: torch.Tensor
    alpha: torch.Tensor
    user_positions_m: torch.Tensor | None = None

    # --- derived quantities ---------------------------------------------------
    @property
    def num_bs(self) -> int:
        return int(self.bs_positions_m.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.H.shape[-1])

    @property
    def array(self) -> ULA:
        """The ULA of every BS (001: ``exp(-j pi n sin(theta))``, not normalised)."""
        return xu_ula(self.num_antennas)

    @property
    def p_max_w(self) -> float:
        return float(dbm_to_watt(self.p_max_dbm))

    @property
    def noise_comm_w(self) -> float:
        return float(dbm_to_watt(self.noise_comm_dbm))

    @property
    def noise_sense_w(self) -> float:
        return float(dbm_to_watt(self.noise_sense_dbm))

    @property
    def sinr_min(self) -> torch.Tensor:
        """Linear SINR targets ``[K]``."""
        return db_to_lin(self.sinr_min_db)

    def with_params(self, **changes) -> BsSelectionInstance:
        """A copy with some fields replaced (e.g. ``crb_max_m2``, ``sinr_min_db``)."""
        return replace(self, **changes)

    # --- file format ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "problem": PROBLEM,
            "params": {
                "num_antennas": int(self.num_antennas),
                "snapshots": int(self.snapshots),
                "p_max_dbm": float(self.p_max_dbm),
                "noise_comm_dbm": float(self.noise_comm_dbm),
                "noise_sense_dbm": float(self.noise_sense_dbm),
                "sinr_min_db": encode_real(self.sinr_min_db),
                "crb_max_m2": float(self.crb_max_m2),
            },
            "bs_positions_m": encode_real(self.bs_positions_m),
            "array_axes": encode_real(self.array_axes),
            "target_position_m": encode_real(self.target_position_m),
            "H": encode_complex(self.H),
            "alpha": encode_complex(self.alpha),
        }
        if self.user_positions_m is not None:
            out["user_positions_m"] = encode_real(self.user_positions_m)
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> BsSelectionInstance:
        f = Fields(obj)
        f.check_keys(["problem", "params", "bs_positions_m", "array_axes", "target_position_m", "H", "alpha"],
                     ["user_positions_m"])
        if f.string("problem") != PROBLEM:
            raise InstanceError(f"problem: expected {PROBLEM!r}")
        p = f.sub("params")
        p.check_keys(_PARAM_KEYS)
        n = p.integer("num_antennas", minimum=1)
        bs = f.real_array("bs_positions_m", (None, 2))
        s = bs.shape[0]
        if s < 2:
            raise InstanceError("bs_positions_m: needs at least two BSs (one receives, one transmits)")
        axes = f.real_array("array_axes", (s, 2), sizes_from="bs_positions_m")
        if bool((torch.linalg.vector_norm(axes, dim=-1) == 0).any()):
            raise InstanceError("array_axes: every axis needs a non-zero length")
        target = f.real_array("target_position_m", (2,))
        if bool((torch.linalg.vector_norm(bs - target, dim=-1) == 0).any()):
            raise InstanceError("target_position_m: coincides with a BS position")
        H = f.complex_array("H", (s, n, None), sizes_from="bs_positions_m, params.num_antennas")
        k = H.shape[2]
        if k < 1:
            raise InstanceError("H: needs at least one user (last dimension)")
        alpha = f.complex_array("alpha", (s, s), sizes_from="bs_positions_m")
        off = ~torch.eye(s, dtype=torch.bool)
        if bool((alpha[off] == 0).any()):
            raise InstanceError("alpha: every off-diagonal (bistatic) gain must be non-zero")
        if bool((alpha.diagonal() != 0).any()):
            raise InstanceError("alpha: the diagonal (a BS sensing its own signal) must be zero")
        sinr_min_db = p.real_array("sinr_min_db", (k,), decibels=True)
        users = f.real_array("user_positions_m", (k, 2)) if f.has("user_positions_m") else None
        return cls(
            num_antennas=n,
            snapshots=p.integer("snapshots", minimum=1),
            p_max_dbm=p.number("p_max_dbm", decibels=True),
            noise_comm_dbm=p.number("noise_comm_dbm", decibels=True),
            noise_sense_dbm=p.number("noise_sense_dbm", decibels=True),
            sinr_min_db=sinr_min_db,
            crb_max_m2=p.number("crb_max_m2", exclusive_minimum=0.0),
            bs_positions_m=bs,
            array_axes=axes,
            target_position_m=target,
            H=H,
            alpha=alpha,
            user_positions_m=users,
        )


def decode_solution(obj: Mapping[str, Any], inst: BsSelectionInstance) -> dict[str, torch.Tensor]:
    """``{"receiver": 0-d int64, "W": [S, N, K], "Rs": [S, N, N]}`` (shapes and range checked)."""
    f = Fields(obj)
    f.check_keys(["receiver", "W", "Rs"], RESULT_FILE_KEYS)
    s, n, k = inst.num_bs, inst.num_antennas, inst.num_users
    return {
        "receiver": torch.tensor(f.integer("receiver", minimum=0, maximum=s - 1), dtype=torch.long),
        "W": f.complex_array("W", (s, n, k)),
        "Rs": f.complex_array("Rs", (s, n, n)),
    }


def encode_solution(sol: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return {"receiver": int(sol["receiver"]), "W": encode_complex(sol["W"]), "Rs": encode_complex(sol["Rs"])}


# --- presets -----------------------------------------------------------------

XU_BS_POSITIONS_M = ((0.0, 100.0), (100.0, 0.0), (0.0, -100.0), (-100.0, 0.0))
"""001 Sec. IV: the four BSs."""
XU_FIG2_USERS_M = ((-30.0, 80.0), (20.0, 130.0), (50.0, -80.0), (-40.0, -70.0), (-70.0, -20.0))
XU_FIG2_TARGET_M = (30.0, 60.0)
"""001 Sec. IV / Fig. 2 / Table II: fixed users and target."""


def facing_centre_axes(bs_positions_m: torch.Tensor) -> torch.Tensor:
    """Array axes ``[S, 2]`` whose broadside points from each BS to the origin (centre of the area).

    A BS at the origin gets the x axis.
    """
    q = bs_positions_m
    r = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    to_c = torch.where(r > 0, -q / torch.where(r > 0, r, torch.ones_like(r)), torch.tensor([0.0, 1.0], dtype=q.dtype))
    return torch.stack([to_c[..., 1], -to_c[..., 0]], dim=-1)  # rotate by -90 deg: rot90(axis) = to_c


def _uniform_disc(rng: np.random.Generator, n: int, radius_m: float, avoid: np.ndarray, min_dist_m: float) -> np.ndarray:
    """``n`` points uniform in the disc, at least ``min_dist_m`` from every point of ``avoid`` (rejection)."""
    out = []
    while len(out) < n:
        r = radius_m * math.sqrt(rng.uniform())
        phi = 2 * math.pi * rng.uniform()
        pt = np.array([r * math.cos(phi), r * math.sin(phi)])
        if avoid.size == 0 or np.min(np.linalg.norm(avoid - pt, axis=-1)) >= min_dist_m:
            out.append(pt)
    return np.array(out)


def xu_preset(
    seed: int,
    *,
    bs_positions_m=XU_BS_POSITIONS_M,
    num_users: int = 5,
    user_positions_m=None,
    target_position_m=None,
    num_antennas: int = 8,
    snapshots: int = 1024,
    p_max_dbm: float = 45.0,
    noise_comm_dbm: float = -85.0,
    noise_sense_dbm: float = -65.0,
    sinr_min_db: float = 8.0,
    crb_max_m2: float = 1.0,
    area_radius_m: float = 150.0,
    min_distance_m: float = 10.0,
    carrier_hz: float = 3.5e9,
    comm_exponent: float = 3.0,
    sense_exponent: float = 2.0,
    rcs_m2: float = 100.0,
) -> BsSelectionInstance:
    r"""001's setting (Sec. IV, Table I) drawn from ``seed``.

    From the paper: S = 4 BSs at (0, 100), (100, 0), (0, -100), (-100, 0) m; K = 5 users
    and the target uniform in a disc of radius 150 m; N = 8; L = 1024; P = 45 dBm per BS;
    sigma_c^2 = -85 dBm; sigma_r^2 = -65 dBm; path-loss exponent 3 (BS-user, Rayleigh
    fading) and 2 (BS-target); Gamma_k = 8 dB and epsilon = 1 m^2 (Fig. 2-3).

    Our choices where Table I is cut (documented defaults, not the paper's values):

    * reference power gain at 1 m, free space at the carrier:
      :math:`\beta_0=(\lambda/4\pi)^2` with ``carrier_hz = 3.5e9`` (-43.3 dB);
    * BS-user channel :math:`\mathbf h_{s,k}=\sqrt{\beta_0 d_{s,k}^{-3}}\,\mathcal{CN}(\mathbf 0,\mathbf I_N)`;
    * bistatic gain by the radar equation with unit element gains and RCS ``rcs_m2 = 100``:
      :math:`|\alpha_{s,t}|^2=\beta_0 d_t^{-2}\cdot\beta_0 d_s^{-2}\cdot 4\pi\sigma_{\mathrm{RCS}}/\lambda^2`,
      phase uniform on :math:`[0, 2\pi)` (independent per ordered pair). The RCS is
      calibrated, not taken from 001: with 1 m^2 the paper's :math:`\epsilon=1` m^2 would need
      hundreds of watts per BS in a typical draw (the CRLB scales as :math:`1/\sigma_{\mathrm{RCS}}`),
      whereas 001's Fig. 4 shows the proposed scheme almost always feasible at low
      :math:`\Gamma`; with 100 m^2 a typical draw meets it with about 1 W per transmitting BS;
    * ULA axes: broadside facing the centre of the area (:func:`facing_centre_axes`);
    * users and target at least ``min_distance_m = 10`` m from every BS.

    Draw order from ``make_rng(seed)``: user positions, target position, H, alpha phases.
    """
    rng = make_rng(seed)
    bs = np.asarray(bs_positions_m, dtype=np.float64)
    if user_positions_m is None:
        users = _uniform_disc(rng, num_users, area_radius_m, bs, min_distance_m)
    else:
        users = np.asarray(user_positions_m, dtype=np.float64)
    if target_position_m is None:
        target = _uniform_disc(rng, 1, area_radius_m, bs, min_distance_m)[0]
    else:
        target = np.asarray(target_position_m, dtype=np.float64)
    s, k, n = bs.shape[0], users.shape[0], num_antennas
    lam = SPEED_OF_LIGHT_M_S / carrier_hz
    beta0 = (lam / (4 * math.pi)) ** 2
    d_user = np.linalg.norm(bs[:, None, :] - users[None, :, :], axis=-1)  # [S, K]
    gain_user = path_loss(torch.as_tensor(d_user), beta0, comm_exponent)
    H = torch.sqrt(gain_user)[:, None, :] * complex_normal(rng, (s, n, k))
    d_target = torch.as_tensor(np.linalg.norm(bs - target, axis=-1))  # [S]
    hop = path_loss(d_target, beta0, sense_exponent)  # [S]
    mag2 = hop[:, None] * hop[None, :] * (4 * math.pi * rcs_m2 / lam**2)
    phase = torch.as_tensor(2 * math.pi * rng.uniform(size=(s, s)))
    alpha = torch.polar(torch.sqrt(mag2), phase) * (1 - torch.eye(s, dtype=torch.float64))
    bs_t = torch.as_tensor(bs)
    return BsSelectionInstance(
        num_antennas=n, snapshots=snapshots, p_max_dbm=p_max_dbm, noise_comm_dbm=noise_comm_dbm,
        noise_sense_dbm=noise_sense_dbm, sinr_min_db=torch.full((k,), float(sinr_min_db), dtype=torch.float64),
        crb_max_m2=crb_max_m2, bs_positions_m=bs_t, array_axes=facing_centre_axes(bs_t),
        target_position_m=torch.as_tensor(target), H=H, alpha=alpha.to(torch.complex128),
        user_positions_m=torch.as_tensor(users),
    )


def xu_fig2_preset(seed: int, *, sinr_min_db: float = 8.0, crb_max_m2: float = 1.0,
                   rcs_m2: float = 100.0) -> BsSelectionInstance:
    """001 Fig. 2 / Table II: users at (-30, 80), (20, 130), (50, -80), (-40, -70), (-70, -20) m,
    target at (30, 60) m, Gamma_k = 8 dB, epsilon = 1; only the fading and gain phases are drawn.
    ``sinr_min_db``, ``crb_max_m2`` and ``rcs_m2`` as in :func:`xu_preset`."""
    return xu_preset(seed, user_positions_m=XU_FIG2_USERS_M, target_position_m=XU_FIG2_TARGET_M,
                     sinr_min_db=sinr_min_db, crb_max_m2=crb_max_m2, rcs_m2=rcs_m2)


def small_preset(seed: int, *, sinr_min_db: float = 8.0, crb_max_m2: float = 10.0,
                 rcs_m2: float = 100.0) -> BsSelectionInstance:
    """A tiny instance for tests: S = 3 BSs on a 100 m circle, K = 2 users, N = 4, L = 1024,
    epsilon = 10 m^2 (a 4-element ULA localises far worse than 001's 8 elements)."""
    angles = (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
    bs = tuple((100.0 * math.cos(a), 100.0 * math.sin(a)) for a in angles)
    return xu_preset(seed, bs_positions_m=bs, num_users=2, num_antennas=4, sinr_min_db=sinr_min_db,
                     crb_max_m2=crb_max_m2, rcs_m2=rcs_m2, area_radius_m=100.0)


FAMILY = register_family(
    ProblemFamily(
        name=PROBLEM,
        paper="001 (xu)",
        summary="min total power s.t. SINR, location CRLB, per-BS power; choose the receiving BS, "
                "user association and beams (S BSs, ULA, K users, one target)",
        instance_type=BsSelectionInstance,
        presets={"xu": xu_preset, "xu-fig2": xu_fig2_preset, "small": small_preset},
        preset_docs={
            "xu": "001 Sec. IV: 4 BSs, 5 users and target uniform in a 150 m disc, N = 8, L = 1024",
            "xu-fig2": "001 Fig. 2 / Table II: the fixed user and target positions",
            "small": "tiny: 3 BSs, 2 users, N = 4, epsilon = 10 m^2 (tests, demos)",
        },
        decode_solution=decode_solution,
        encode_solution=encode_solution,
        format_doc=__doc__ or "",
    )
)
