r"""``multibs-association`` (paper 000, Li et al.): joint user association and multi-BS beamforming.

K ISAC BSs with M-antenna ULAs (:func:`isac.scenario.arrays.li_ula`) on orthogonal bands serve N
single-antenna CUs; BS k senses one detection target and one estimation target (000 Sec. II-C).
Problem (P1), eq. (27):

.. math::

    \max_{\{\mathbf W_k\},\mathbf U}\ \sum_i\sum_k u_{k,i}\frac{B}{\|\tilde{\mathbf u}_k\|_0}\log_2(1+\gamma_{k,i})
    \ \text{s.t.}\ \Gamma_k\ge\Gamma_t,\ \mathrm{CRB}(\phi_k)\le\epsilon,\ \|\mathbf W_k\|_F^2\le P_t,
    \ \textstyle\sum_i u_{k,i}\ge1,\ \sum_k u_{k,i}=1,\ u_{k,i}\in\{0,1\},

with :math:`\gamma_{k,i}` of eq. (8) (:mod:`isac.metrics.network`), :math:`\Gamma_k` of eq. (18)
(:mod:`isac.metrics.radar`) and the DoA CRB of eq. (22) (:mod:`isac.metrics.bounds.li`).

File format (all keys required unless marked optional)::

    {"problem": "multibs-association",
     "params": {"num_bs": K, "num_antennas": M, "num_sensing_streams": Ns,
                "spacing_wavelengths": d/lambda, "snapshots": L,
                "p_max_dbm": number or list of K numbers (per-BS budget P_t),
                "noise_comm_dbm": sigma_i^2, "noise_radar_dbm": sigma_r^2,
                "snr_min_db": Gamma_t, "crb_max_rad2": epsilon, "rcs_variance": sigma_t^2,
                "false_alarm_probability": P_FA    (optional, reports P_D),
                "bandwidth_hz": B                  (optional, default 1: rates in bit/s/Hz)},
     "H": K x M x N complex (H[k][:, i] is h_{k,i}; CU i receives h_{k,i}^H x_k on band k),
     "detection_targets":  {"angle_rad": K real, "echo_power_gain": K real},
     "estimation_targets": {"angle_rad": K real, "echo_power_gain": K real, "rcs": K complex},
     "positions": {"bs_m": K x 2, "users_m": N x 2, "detection_targets_m": K x 2,
                   "estimation_targets_m": K x 2}   (optional, metres, for plots only),
     "W0": K x M x (N+Ns) complex (optional initial point)}

Angles are measured from each BS's array axis (000 eq. (5) uses :math:`\cos\phi`), in
:math:`[0,\pi]`. ``echo_power_gain`` is the round-trip power gain :math:`\rho=|\tilde\beta|^4`
(see :mod:`isac.metrics.radar`). A scalar ``p_max_dbm`` is read as the same budget for every
BS; ``to_dict`` always writes the list.

A solution is ``{"W": K x M x (N+Ns) complex, "association": K x N of 0/1}``: ``W[k]`` has one
column per CU (column i serves CU i, wherever CU i is associated), then Ns radar streams
(000 eq. (3) has Ns = M); ``association[k][i] = 1`` iff BS k serves CU i. Columns of
``W[k]`` for CUs that BS k does not serve still radiate power and interfere (eq. (8)); a
solver should zero them (000's beamforming step gives them zero weight).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from isac.scenario.arrays import ULA, li_ula
from isac.scenario.io import MAX_SIZE, RESULT_FILE_KEYS, Fields, InstanceError, encode_complex, encode_real
from isac.scenario.problems import ProblemFamily, register_family
from isac.scenario.random import complex_normal, make_rng
from isac.units import db_to_lin, dbm_to_watt

PROBLEM = "multibs-association"
_PARAM_KEYS = (
    "num_bs", "num_antennas", "num_sensing_streams", "spacing_wavelengths", "snapshots",
    "p_max_dbm", "noise_comm_dbm", "noise_radar_dbm", "snr_min_db", "crb_max_rad2", "rcs_variance",
)
_PARAM_OPTIONAL = ("false_alarm_probability", "bandwidth_hz")
_POSITION_KEYS = ("bs_m", "users_m", "detection_targets_m", "estimation_targets_m")


@dataclass(frozen=True)
class MultibsAssociationInstance:
    """One ``multibs-association`` instance.

    Tensors: ``H [K, M, N]`` complex128; ``det_angle_rad, det_echo_power_gain,
    est_angle_rad, est_echo_power_gain [K]`` float64; ``est_rcs [K]`` complex128;
    ``W0 [K, M, N+Ns]`` or None; ``positions`` name -> ``[*, 2]`` float64 or None.
    """

    problem: ClassVar[str] = PROBLEM

    num_antennas: int
    num_sensing_streams: int
    spacing_wavelengths: float
    snapshots: int
    p_max_dbm: tuple[float, ...]
    noise_comm_dbm: float
    noise_radar_dbm: float
    snr_min_db: float
    crb_max_rad2: float
    rcs_variance: float
    H: torch.Tensor
    det_angle_rad: torch.Tensor
    det_echo_power_gain: torch.Tensor
    est_angle_rad: torch.Tensor
    est_echo_power_gain: torch.Tensor
    est_rcs: torch.Tensor
    false_alarm_probability: float | None = None
    bandwidth_hz: float | None = None
    positions: Mapping[str, torch.Tensor] | None = None
    W0: torch.Tensor | None = None

    # --- derived quantities ---------------------------------------------------
    @property
    def num_bs(self) -> int:
        return int(self.H.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.H.shape[2])

    @property
    def num_streams(self) -> int:
        return self.num_users + self.num_sensing_streams

    @property
    def array(self) -> ULA:
        return li_ula(self.num_antennas, self.spacing_wavelengths)

    @property
    def p_max_w(self) -> torch.Tensor:
        """Per-BS power budgets ``[K]`` in watts."""
        return dbm_to_watt(torch.tensor(self.p_max_dbm, dtype=torch.float64))

    @property
    def noise_comm_w(self) -> float:
        return float(dbm_to_watt(self.noise_comm_dbm))

    @property
    def noise_radar_w(self) -> float:
        return float(dbm_to_watt(self.noise_radar_dbm))

    @property
    def snr_min(self) -> float:
        """:math:`\\Gamma_t` (linear)."""
        return float(db_to_lin(self.snr_min_db))

    @property
    def bandwidth(self) -> float:
        return 1.0 if self.bandwidth_hz is None else float(self.bandwidth_hz)

    def with_params(self, **changes) -> MultibsAssociationInstance:
        """A copy with some fields replaced (e.g. ``crb_max_rad2``, ``p_max_dbm``)."""
        if "p_max_dbm" in changes:
            p = changes["p_max_dbm"]
            changes["p_max_dbm"] = tuple(float(x) for x in p) if isinstance(p, (list, tuple)) else (float(p),) * self.num_bs
        return replace(self, **changes)

    # --- file format ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "num_bs": self.num_bs,
            "num_antennas": int(self.num_antennas),
            "num_sensing_streams": int(self.num_sensing_streams),
            "spacing_wavelengths": float(self.spacing_wavelengths),
            "snapshots": int(self.snapshots),
            "p_max_dbm": [float(x) for x in self.p_max_dbm],
            "noise_comm_dbm": float(self.noise_comm_dbm),
            "noise_radar_dbm": float(self.noise_radar_dbm),
            "snr_min_db": float(self.snr_min_db),
            "crb_max_rad2": float(self.crb_max_rad2),
            "rcs_variance": float(self.rcs_variance),
        }
        if self.false_alarm_probability is not None:
            params["false_alarm_probability"] = float(self.false_alarm_probability)
        if self.bandwidth_hz is not None:
            params["bandwidth_hz"] = float(self.bandwidth_hz)
        out: dict[str, Any] = {
            "problem": PROBLEM,
            "params": params,
            "H": encode_complex(self.H),
            "detection_targets": {
                "angle_rad": encode_real(self.det_angle_rad),
                "echo_power_gain": encode_real(self.det_echo_power_gain),
            },
            "estimation_targets": {
                "angle_rad": encode_real(self.est_angle_rad),
                "echo_power_gain": encode_real(self.est_echo_power_gain),
                "rcs": encode_complex(self.est_rcs),
            },
        }
        if self.positions is not None:
            out["positions"] = {k: encode_real(v) for k, v in self.positions.items()}
        if self.W0 is not None:
            out["W0"] = encode_complex(self.W0)
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> MultibsAssociationInstance:
        f = Fields(obj)
        f.check_keys(["problem", "params", "H", "detection_targets", "estimation_targets"], ["positions", "W0"])
        if f.string("problem") != PROBLEM:
            raise InstanceError(f"problem: expected {PROBLEM!r}")
        p = f.sub("params")
        p.check_keys(_PARAM_KEYS, _PARAM_OPTIONAL)
        k = p.integer("num_bs", minimum=1)
        m = p.integer("num_antennas", minimum=1)
        ns = p.integer("num_sensing_streams", minimum=0, maximum=MAX_SIZE)
        if isinstance(p.obj["p_max_dbm"], list):
            arr = p.real_array("p_max_dbm", (k,), decibels=True)
            p_max = tuple(float(x) for x in arr.tolist())
        else:
            p_max = (p.number("p_max_dbm", decibels=True),) * k
        H = f.complex_array("H", (k, m, None))
        n = H.shape[2]
        if n < 1:
            raise InstanceError("H: needs at least one CU (third dimension)")
        det = f.sub("detection_targets")
        det.check_keys(["angle_rad", "echo_power_gain"])
        est = f.sub("estimation_targets")
        est.check_keys(["angle_rad", "echo_power_gain", "rcs"])
        est_rcs = est.complex_array("rcs", (k,))
        if bool((est_rcs == 0).any()):
            raise InstanceError("estimation_targets.rcs: every estimation target needs a non-zero RCS")
        positions = None
        if f.has("positions"):
            pos = f.sub("positions")
            pos.check_keys(_POSITION_KEYS)
            rows = {"bs_m": k, "users_m": n, "detection_targets_m": k, "estimation_targets_m": k}
            positions = {key: pos.real_array(key, (rows[key], 2)) for key in _POSITION_KEYS}
        return cls(
            num_antennas=m,
            num_sensing_streams=ns,
            spacing_wavelengths=p.number("spacing_wavelengths", exclusive_minimum=0.0),
            snapshots=p.integer("snapshots", minimum=1),
            p_max_dbm=p_max,
            noise_comm_dbm=p.number("noise_comm_dbm", decibels=True),
            noise_radar_dbm=p.number("noise_radar_dbm", decibels=True),
            snr_min_db=p.number("snr_min_db", decibels=True),
            crb_max_rad2=p.number("crb_max_rad2", exclusive_minimum=0.0),
            rcs_variance=p.number("rcs_variance", exclusive_minimum=0.0),
            H=H,
            det_angle_rad=det.real_array("angle_rad", (k,)),
            det_echo_power_gain=det.real_array("echo_power_gain", (k,), minimum=0.0),
            est_angle_rad=est.real_array("angle_rad", (k,)),
            est_echo_power_gain=_positive(est, "echo_power_gain", k),
            est_rcs=est_rcs,
            false_alarm_probability=_open_unit(p, "false_alarm_probability") if p.has("false_alarm_probability") else None,
            bandwidth_hz=p.number("bandwidth_hz", exclusive_minimum=0.0) if p.has("bandwidth_hz") else None,
            positions=positions,
            W0=f.complex_array("W0", (k, m, n + ns)) if f.has("W0") else None,
        )


def _positive(f: Fields, name: str, k: int) -> torch.Tensor:
    t = f.real_array(name, (k,), minimum=0.0)
    if bool((t == 0).any()):
        raise InstanceError(f"{f.key(name)}: must be > 0 (a zero gain makes the CRB infinite)")
    return t


def _open_unit(f: Fields, name: str) -> float:
    v = f.number(name, exclusive_minimum=0.0)
    if v >= 1.0:
        raise InstanceError(f"{f.key(name)}: must be < 1, got {v:g}")
    return v


def decode_solution(obj: Mapping[str, Any], inst: MultibsAssociationInstance) -> dict[str, torch.Tensor]:
    """``{"W": [K, M, N+Ns] complex128, "association": [K, N] float64 of 0/1}``."""
    f = Fields(obj)
    f.check_keys(["W", "association"], RESULT_FILE_KEYS)
    W = f.complex_array("W", (inst.num_bs, inst.num_antennas, inst.num_streams))
    A = f.real_array("association", (inst.num_bs, inst.num_users))
    if not bool(((A == 0) | (A == 1)).all()):
        raise InstanceError("association: entries must be 0 or 1")
    return {"W": W, "association": A}


def encode_solution(sol: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    A = torch.as_tensor(sol["association"])
    return {"W": encode_complex(sol["W"]), "association": np.asarray(A.detach().cpu()).astype(int).tolist()}


# --- presets -----------------------------------------------------------------


def _draw_bs_positions(rng: np.random.Generator, k: int, side_m: float, min_m: float, max_m: float) -> np.ndarray:
    """K BS positions in the square, every nearest-neighbour distance in [min_m, max_m] (rejection)."""
    for _ in range(10_000):
        pos = rng.uniform(0.0, side_m, size=(k, 2))
        if k == 1:
            return pos
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        if d.min() >= min_m and d.min(axis=1).max() <= max_m:
            return pos
    raise ValueError(
        f"bs_spacing_m: could not place {k} BSs {min_m:g}-{max_m:g} m apart in a {side_m:g} m square; "
        "pass a smaller bs_spacing_m or a larger side_m"
    )


def _angle_from_x_axis(origin: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Angle between the ULA axis (x) and the direction to ``point``, in [0, pi] (000 eq. (5))."""
    v = point - origin
    return np.arccos(np.clip(v[..., 0] / np.linalg.norm(v, axis=-1), -1.0, 1.0))


def li_preset(
    seed: int,
    *,
    num_bs: int = 3,
    num_users: int = 10,
    num_antennas: int = 24,
    num_sensing_streams: int | None = None,
    p_max_dbm: float = 32.0,
    noise_dbm: float = -90.0,
    reference_gain_db: float = -30.0,
    exponent_comm: float = 2.4,
    exponent_radar: float = 3.5,
    rician_factor_db: float = 3.0,
    crb_max_rad2: float = 0.01,
    snr_min_db: float = 7.0,
    snapshots: int = 1024,
    rcs_variance: float = 1.0,
    side_m: float = 200.0,
    bs_spacing_m: tuple[float, float] = (80.0, 160.0),
    target_range_m: tuple[float, float] = (100.0, 160.0),
    false_alarm_probability: float = 1e-4,
) -> MultibsAssociationInstance:
    r"""000's Table 2 / Sec. VI-A setting drawn from ``seed``.

    K = 3 BSs, N = 10 CUs, M = 24, Ns = M radar streams, P_t = 32 dBm per BS,
    sigma_i^2 = sigma_r^2 = -90 dBm, beta_0 = -30 dB at 1 m, exponents 2.4 (comm) and
    3.5 (radar), Rician factor 3 dB, epsilon = 0.01 rad^2, Gamma_t = 7 dB, L = 1024.
    200 m x 200 m area; BSs 80-160 m apart (nearest neighbour); CUs uniform in the area;
    each BS's two targets uniformly 100-160 m away at a uniform bearing.

    Choices where 000 is silent or ambiguous (documented in the report):

    * path loss :math:`\beta_0(d/d_0)^{-\varsigma}` is a *power* gain; the channel amplitude in
      eq. (4) is its square root (read as an amplitude, the CU SNR would be ~ -20 dB and the
      reported rates impossible); distances below d_0 = 1 m are clamped to 1 m;
    * the radar path loss is the round-trip power gain :math:`\rho=|\tilde\beta|^4`
      (see :mod:`isac.metrics.radar`);
    * RCS variance sigma_t^2 = 1 (not given); the estimation target's RCS is one draw of
      CN(0, sigma_t^2); P_FA = 1e-4 (not given; only used to report P_D);
    * LoS component :math:`\bar{\mathbf c}=\mathbf a/\sqrt M` as printed (unit norm), ULA axis
      along x for every BS, spacing lambda/2 (not given).

    What follows from these choices (measured on this preset, and worth knowing before reading
    any figure made with it):

    * the NLoS part of eq. (4) is M times stronger than the LoS part as printed
      (:math:`\mathbb E\|\tilde{\mathbf c}\|^2=M` against :math:`\|\bar{\mathbf c}\|^2=1`), so with
      M = 24 and a 3 dB Rician factor the channels are close to Rayleigh;
    * the radar SNR target Gamma_t = 7 dB binds for most BSs (the detection target needs a
      noticeable share of P_t);
    * epsilon = 0.01 rad^2 never binds: any beam aimed at the estimation target gives a DoA CRB
      of ~1e-6 rad^2; the CRB constraint only matters for epsilon of roughly 1e-8 to 1e-4 rad^2.
    """
    rng = make_rng(seed)
    ns = num_antennas if num_sensing_streams is None else num_sensing_streams
    bs = _draw_bs_positions(rng, num_bs, side_m, *bs_spacing_m)
    users = rng.uniform(0.0, side_m, size=(num_users, 2))

    def around(rng_):
        r = rng_.uniform(*target_range_m, size=num_bs)
        b = rng_.uniform(0.0, 2 * math.pi, size=num_bs)
        return bs + np.stack([r * np.cos(b), r * np.sin(b)], axis=-1)

    det_pos = around(rng)
    est_pos = around(rng)
    beta0 = 10.0 ** (reference_gain_db / 10.0)
    kappa = 10.0 ** (rician_factor_db / 10.0)
    array = li_ula(num_antennas)

    d_user = np.maximum(np.linalg.norm(bs[:, None] - users[None], axis=-1), 1.0)  # [K, N]
    gain_user = beta0 * d_user ** (-exponent_comm)
    theta_user = torch.as_tensor(_angle_from_x_axis(bs[:, None], users[None]), dtype=torch.float64)
    los = array.steering(theta_user) / math.sqrt(num_antennas)  # [K, N, M]
    nlos = complex_normal(rng, (num_bs, num_users, num_antennas))
    h = torch.as_tensor(np.sqrt(gain_user), dtype=torch.float64)[..., None] * (
        math.sqrt(kappa / (kappa + 1)) * los + math.sqrt(1 / (kappa + 1)) * nlos
    )
    H = h.transpose(-2, -1).contiguous()  # [K, M, N]

    def echo_gain(pos):
        d = np.maximum(np.linalg.norm(pos - bs, axis=-1), 1.0)
        return torch.as_tensor(beta0 * d ** (-exponent_radar), dtype=torch.float64)

    est_rcs = complex_normal(rng, (num_bs,), variance=rcs_variance)
    return MultibsAssociationInstance(
        num_antennas=num_antennas, num_sensing_streams=ns, spacing_wavelengths=0.5, snapshots=snapshots,
        p_max_dbm=(float(p_max_dbm),) * num_bs, noise_comm_dbm=noise_dbm, noise_radar_dbm=noise_dbm,
        snr_min_db=snr_min_db, crb_max_rad2=crb_max_rad2, rcs_variance=rcs_variance, H=H,
        det_angle_rad=torch.as_tensor(_angle_from_x_axis(bs, det_pos), dtype=torch.float64),
        det_echo_power_gain=echo_gain(det_pos),
        est_angle_rad=torch.as_tensor(_angle_from_x_axis(bs, est_pos), dtype=torch.float64),
        est_echo_power_gain=echo_gain(est_pos), est_rcs=est_rcs,
        false_alarm_probability=false_alarm_probability,
        positions={
            "bs_m": torch.as_tensor(bs, dtype=torch.float64),
            "users_m": torch.as_tensor(users, dtype=torch.float64),
            "detection_targets_m": torch.as_tensor(det_pos, dtype=torch.float64),
            "estimation_targets_m": torch.as_tensor(est_pos, dtype=torch.float64),
        },
    )


TABLE3_SIDE_M = 200.0 * math.sqrt(10.0 / 3.0)
"""Side of the `li-table3` area: 000's 200 m square scaled to keep the BS density of K = 3 at K = 10."""


def li_table3_preset(seed: int, *, num_bs: int = 10, num_users: int = 40, side_m: float = TABLE3_SIDE_M,
                     **params) -> MultibsAssociationInstance:
    """000 Table 3: K = 10 BSs, N = 40 CUs, otherwise Table 2 (see :func:`li_preset`).

    000 keeps the 200 m x 200 m area and the 80-160 m BS spacing for this network, but ten BSs
    that far apart do not fit in that square (:func:`li_preset` raises). We keep the spacing rule
    and the BS density of the default network (3 BSs per 200 m x 200 m): the square's side is
    200 * sqrt(10/3) = 365.1 m. CUs are uniform in that square; targets 100-160 m from their BS
    as in Table 2. Any other `li` parameter can be passed (e.g. ``p_max_dbm``).
    """
    return li_preset(seed, num_bs=num_bs, num_users=num_users, side_m=side_m, **params)


def small_preset(seed: int) -> MultibsAssociationInstance:
    """Tiny instance for tests: K = 2 BSs, N = 4 CUs, M = 4 antennas, Ns = 2, L = 64."""
    return li_preset(seed, num_bs=2, num_users=4, num_antennas=4, num_sensing_streams=2, snapshots=64)


FAMILY = register_family(
    ProblemFamily(
        name=PROBLEM,
        paper="000 (li)",
        summary="max network sum rate over user association and per-BS beams, s.t. radar SNR, DoA CRB, per-BS power",
        instance_type=MultibsAssociationInstance,
        presets={"li": li_preset, "li-table3": li_table3_preset, "small": small_preset},
        preset_docs={
            "li": "000 Table 2: K = 3 BSs, N = 10 CUs, M = 24, 32 dBm, L = 1024",
            "li-table3": "000 Table 3: K = 10 BSs, N = 40 CUs in a 365 m square (Table 2's BS density)",
            "small": "tiny K = 2, N = 4, M = 4, Ns = 2 (tests, demos)",
        },
        decode_solution=decode_solution,
        encode_solution=encode_solution,
        format_doc=__doc__ or "",
    )
)
