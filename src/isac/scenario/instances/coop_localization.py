r"""``coop-localization`` (paper 002, Lian et al.): sum rate s.t. SPEB and per-BS power.

N cooperating BSs, each with an :math:`L = L_x L_z` UPA on the x-z plane (eq. (8)),
jointly transmit to K single-antenna users (eq. (1)-(4)) and localise one target
from the echoes received at all BSs (eq. (7), SPEB of eq. (19)-(31),
:mod:`isac.metrics.bounds.lian`):

.. math::

    \max_{\mathbf P}\ \sum_{k=1}^K \log_2(1+\mathrm{SINR}_k)\quad\text{s.t.}\quad
    \|\mathbf P_n\|_F^2\le P_n\ \forall n\ \text{(32b)},\qquad
    \mathrm{SPEB}(\mathbf P;\mathbf t)\le\gamma\ \text{(32c)}.

File format (all keys required unless marked optional; complex arrays are
``{"re": [...], "im": [...]}``, nested lists row-major)::

    {"problem": "coop-localization",
     "params": {"num_bs": N, "upa_shape": [Lx, Lz], "p_max_dbm": [P_1, .., P_N] (dBm, per BS),
                "noise_comm_dbm": .., "noise_sense_dbm": .., "speb_max_m2": gamma (m^2, > 0),
                "snapshots": L_s (>= 1), "carrier_hz": .., "bandwidth_hz": ..,
                "num_sensing_streams": Ns (>= 0, the paper has 1),
                "spacing_wavelengths": d/lambda (optional, default 0.5),
                "speb_model": "exact" | "eq20" (optional, default "exact")},
     "bs_positions_m": N x 3 real, "target_position_m": 3 real,
     "H": N x L x K complex (H[n][:, k] = h_{k,n}; user k receives sum_n h_{k,n}^H x_n),
     "alpha": N x N complex (alpha[m][n]: BS m -> target -> BS n, eq. (7)),
     "user_positions_m": K x 3 real (optional, informative),
     "H_estimate": N x L x K complex (optional: the CSI a solver sees, 002 Sec. IV-D),
     "target_position_estimate_m": 3 real (optional: the target position a solver sees),
     "W0": N x L x (K+Ns) complex (optional initial point)}

The metrics are always evaluated with the true ``H`` and ``target_position_m``;
the optional estimates are what a robust solver is given instead (002's robustness
study). ``carrier_hz`` and ``bandwidth_hz`` document the scenario (the noise powers
and gains in the file already include them). ``speb_model`` selects the equivalent
FIM: the exact Schur complement (Appendix eq. (52)) or the printed closed form
eq. (20), see :mod:`isac.metrics.bounds.lian`.

A solution is ``{"W": N x L x (K+Ns) complex}``: for each BS n its K user beams
:math:`\mathbf p^c_{n,k}` and then its Ns sensing beams :math:`\mathbf p^s_n` (the
library's order "users, then sensing"; 002 writes the sensing beam first in eq. (1)).
Joint transmission stacks the BSs: :math:`\mathbf p_k^c = [\mathbf p^c_{1,k}; ..; \mathbf p^c_{N,k}]`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from isac.scenario.arrays import UPA, lian_upa
from isac.scenario.io import MAX_SIZE, RESULT_FILE_KEYS, Fields, InstanceError, encode_complex, encode_real
from isac.scenario.problems import ProblemFamily, register_family
from isac.scenario.random import make_rng
from isac.units import dbm_to_watt

PROBLEM = "coop-localization"
SPEB_MODELS = ("exact", "eq20")
_PARAM_KEYS = (
    "num_bs", "upa_shape", "p_max_dbm", "noise_comm_dbm", "noise_sense_dbm", "speb_max_m2",
    "snapshots", "carrier_hz", "bandwidth_hz", "num_sensing_streams",
)
_OPTIONAL_PARAM_KEYS = ("spacing_wavelengths", "speb_model")


@dataclass(frozen=True)
class CoopLocalizationInstance:
    """One ``coop-localization`` instance.

    Tensors: ``bs_positions_m [N, 3]``, ``target_position_m [3]`` (float64, m),
    ``H [N, L, K]``, ``alpha [N, N]`` (complex128), optional ``user_positions_m [K, 3]``,
    ``H_estimate [N, L, K]``, ``target_position_estimate_m [3]``, ``W0 [N, L, K+Ns]``.
    ``p_max_dbm`` is a tuple of N per-BS budgets.
    """

    problem: ClassVar[str] = PROBLEM

    upa_shape: tuple[int, int]
    p_max_dbm: tuple[float, ...]
    noise_comm_dbm: float
    noise_sense_dbm: float
    speb_max_m2: float
    snapshots: int
    carrier_hz: float
    bandwidth_hz: float
    num_sensing_streams: int
    bs_positions_m: torch.Tensor
    target_position_m: torch.Tensor
    H: torch.Tensor
    alpha: torch.Tensor
    spacing_wavelengths: float = 0.5
    speb_model: str = "exact"
    user_positions_m: torch.Tensor | None = None
    H_estimate: torch.Tensor | None = None
    target_position_estimate_m: torch.Tensor | None = None
    W0: torch.Tensor | None = None

    # --- derived quantities ---------------------------------------------------
    @property
    def num_bs(self) -> int:
        return int(self.bs_positions_m.shape[0])

    @property
    def num_antennas(self) -> int:
        """L, antennas per BS."""
        return self.upa_shape[0] * self.upa_shape[1]

    @property
    def num_users(self) -> int:
        return int(self.H.shape[-1])

    @property
    def num_streams(self) -> int:
        return self.num_users + self.num_sensing_streams

    @property
    def array(self) -> UPA:
        return lian_upa(*self.upa_shape, spacing_wavelengths=self.spacing_wavelengths)

    @property
    def p_max_w(self) -> torch.Tensor:
        """Per-BS budgets ``[N]`` in watts."""
        return dbm_to_watt(torch.tensor(self.p_max_dbm, dtype=torch.float64))

    @property
    def noise_comm_w(self) -> float:
        return float(dbm_to_watt(self.noise_comm_dbm))

    @property
    def noise_sense_w(self) -> float:
        return float(dbm_to_watt(self.noise_sense_dbm))

    @property
    def H_stacked(self) -> torch.Tensor:
        """Joint channel ``[N*L, K]``: column k is :math:`\\mathbf h_k` of eq. (2)."""
        return self.H.reshape(self.num_bs * self.num_antennas, self.num_users)

    def solver_view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H, target_position_m)`` a solver should use: the estimates when present, else the truth."""
        h = self.H_estimate if self.H_estimate is not None else self.H
        t = self.target_position_estimate_m if self.target_position_estimate_m is not None else self.target_position_m
        return h, t

    def with_params(self, **changes) -> CoopLocalizationInstance:
        """A copy with some fields replaced (e.g. ``speb_max_m2``, ``p_max_dbm``)."""
        return replace(self, **changes)

    # --- file format ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "num_bs": self.num_bs,
            "upa_shape": list(self.upa_shape),
            "p_max_dbm": [float(p) for p in self.p_max_dbm],
            "noise_comm_dbm": float(self.noise_comm_dbm),
            "noise_sense_dbm": float(self.noise_sense_dbm),
            "speb_max_m2": float(self.speb_max_m2),
            "snapshots": int(self.snapshots),
            "carrier_hz": float(self.carrier_hz),
            "bandwidth_hz": float(self.bandwidth_hz),
            "num_sensing_streams": int(self.num_sensing_streams),
        }
        if self.spacing_wavelengths != 0.5:
            params["spacing_wavelengths"] = float(self.spacing_wavelengths)
        if self.speb_model != "exact":
            params["speb_model"] = self.speb_model
        out: dict[str, Any] = {
            "problem": PROBLEM,
            "params": params,
            "bs_positions_m": encode_real(self.bs_positions_m),
            "target_position_m": encode_real(self.target_position_m),
            "H": encode_complex(self.H),
            "alpha": encode_complex(self.alpha),
        }
        if self.user_positions_m is not None:
            out["user_positions_m"] = encode_real(self.user_positions_m)
        if self.H_estimate is not None:
            out["H_estimate"] = encode_complex(self.H_estimate)
        if self.target_position_estimate_m is not None:
            out["target_position_estimate_m"] = encode_real(self.target_position_estimate_m)
        if self.W0 is not None:
            out["W0"] = encode_complex(self.W0)
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> CoopLocalizationInstance:
        f = Fields(obj)
        f.check_keys(
            ["problem", "params", "bs_positions_m", "target_position_m", "H", "alpha"],
            ["user_positions_m", "H_estimate", "target_position_estimate_m", "W0"],
        )
        if f.string("problem") != PROBLEM:
            raise InstanceError(f"problem: expected {PROBLEM!r}")
        p = f.sub("params")
        p.check_keys(_PARAM_KEYS, _OPTIONAL_PARAM_KEYS)
        n = p.integer("num_bs", minimum=1)
        upa_shape = p.int_list("upa_shape", 2)
        length = upa_shape[0] * upa_shape[1]
        p_max = p.real_array("p_max_dbm", (n,), decibels=True)
        bs = f.real_array("bs_positions_m", (n, 3))
        target = f.real_array("target_position_m", (3,))
        _check_geometry(bs, target, "target_position_m")
        H = f.complex_array("H", (n, length, None))
        k = H.shape[2]
        if k < 1:
            raise InstanceError("H: needs at least one user (last dimension K >= 1)")
        alpha = f.complex_array("alpha", (n, n))
        if bool((alpha == 0).any()):
            raise InstanceError("alpha: every reflection coefficient must be non-zero")
        ns = p.integer("num_sensing_streams", minimum=0, maximum=MAX_SIZE)
        t_est = f.real_array("target_position_estimate_m", (3,)) if f.has("target_position_estimate_m") else None
        if t_est is not None:
            _check_geometry(bs, t_est, "target_position_estimate_m")
        return cls(
            upa_shape=upa_shape,
            p_max_dbm=tuple(float(x) for x in p_max),
            noise_comm_dbm=p.number("noise_comm_dbm", decibels=True),
            noise_sense_dbm=p.number("noise_sense_dbm", decibels=True),
            speb_max_m2=p.number("speb_max_m2", exclusive_minimum=0.0),
            snapshots=p.integer("snapshots", minimum=1),
            carrier_hz=p.number("carrier_hz", exclusive_minimum=0.0),
            bandwidth_hz=p.number("bandwidth_hz", exclusive_minimum=0.0),
            num_sensing_streams=ns,
            bs_positions_m=bs,
            target_position_m=target,
            H=H,
            alpha=alpha,
            spacing_wavelengths=p.number("spacing_wavelengths", exclusive_minimum=0.0)
            if p.has("spacing_wavelengths") else 0.5,
            speb_model=p.string("speb_model", SPEB_MODELS) if p.has("speb_model") else "exact",
            user_positions_m=f.real_array("user_positions_m", (k, 3)) if f.has("user_positions_m") else None,
            H_estimate=f.complex_array("H_estimate", (n, length, k)) if f.has("H_estimate") else None,
            target_position_estimate_m=t_est,
            W0=f.complex_array("W0", (n, length, k + ns)) if f.has("W0") else None,
        )


def _check_geometry(bs: torch.Tensor, target: torch.Tensor, key: str) -> None:
    """The azimuth (eq. (6)) and the Jacobian (eq. (30)-(31)) need the target off every BS's vertical."""
    dxy = torch.linalg.vector_norm(target[:2] - bs[:, :2], dim=-1)
    if bool((dxy < 1e-6).any()):
        raise InstanceError(f"{key}: target lies directly above/below a BS (azimuth undefined)")


def decode_solution(obj: Mapping[str, Any], inst: CoopLocalizationInstance) -> dict[str, torch.Tensor]:
    f = Fields(obj)
    f.check_keys(["W"], RESULT_FILE_KEYS)
    return {"W": f.complex_array("W", (inst.num_bs, inst.num_antennas, inst.num_streams))}


def encode_solution(sol: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return {"W": encode_complex(sol["W"])}


# --- presets -----------------------------------------------------------------


def lian_preset(
    seed: int,
    *,
    bs_positions_m=None,
    target_position_m=None,
    upa_shape: tuple[int, int] = (4, 4),
    num_users: int = 5,
    p_max_dbm: float = 20.0,
    snapshots: int = 1024,
    carrier_hz: float = 28e9,
    bandwidth_hz: float = 100e6,
    noise_figure_db: float = 7.0,
    rcs_m2: float | None = None,
    num_clusters: int = 2,
    gamma_over_floor: float = 2.0,
    speb_max_m2: float | None = None,
    speb_model: str = "exact",
    csi_snr_db: float | None = None,
    position_error_range_m: tuple[float, float] | None = None,
    position_error_m: float | None = None,
) -> CoopLocalizationInstance:
    r"""002's setting (Sec. IV-A) with our geometric 28 GHz channels, drawn from ``seed``.

    From the paper: N = 3 BSs at (236, 390, 6), (288, 390, 6), (236, 490, 6) m, 4x4 UPAs,
    K = 5 users, target at (244, 456, 22) m, 28 GHz, one sensing stream, P_n = 20 dBm
    (Fig. 9-10). Ours (the paper does not give them): users uniform around the BSs
    (:data:`isac.scenario.mmwave.LIAN_USER_AREA_M`), 100 MHz bandwidth, 7 dB noise
    figure (noise -87 dBm for both links), RCS 10 m^2, 1024 snapshots.

    SPEB threshold: :math:`\gamma` = ``gamma_over_floor`` x the SPEB floor
    (:func:`isac.metrics.bounds.lian_floor.speb_floor`: the least SPEB any beam reaches under
    the budgets; one SDP per geometry, cached, and the same for every draw of this preset). The
    default 2 makes (32c) bind: the sum-rate-maximising beams without it reach 10-30x the floor.
    ``speb_max_m2`` sets an absolute :math:`\gamma` instead (the instance file always stores the
    absolute value). ``gamma_over_floor`` < 1 is infeasible by construction (solvers say so).
    002 takes :math:`\gamma` from its SCA baseline's output; the learned methods do the same here.

    ``csi_snr_db`` / ``position_error_range_m`` add the estimates of 002 Sec. IV-D
    (``H_estimate``, ``target_position_estimate_m``; Fig. 9 uses [2, 3) m, Fig. 10 SNR 20 dB).
    ``position_error_m = a`` is short for ``position_error_range_m = (a, a + 1)`` (Fig. 10's x axis:
    "[a, a+1)" m per coordinate); give at most one of the two.
    """
    from isac.metrics.bounds.lian_floor import speb_floor_m2
    from isac.scenario import mmwave

    rng = make_rng(seed)
    bs = torch.tensor(mmwave.LIAN_BS_POSITIONS_M if bs_positions_m is None else bs_positions_m, dtype=torch.float64)
    target = torch.tensor(mmwave.LIAN_TARGET_POSITION_M if target_position_m is None else target_position_m,
                          dtype=torch.float64)
    array = lian_upa(*upa_shape)
    users = mmwave.drop_users(rng, num_users, bs_positions_m=bs.tolist())
    H = mmwave.geometric_channels(rng, array, bs, users, carrier_hz, num_clusters=num_clusters)
    alpha = mmwave.sensing_gains(rng, bs, target, array.size, carrier_hz,
                                 mmwave.DEFAULT_RCS_M2 if rcs_m2 is None else rcs_m2)
    noise_dbm = mmwave.thermal_noise_dbm(bandwidth_hz, noise_figure_db)
    inst = CoopLocalizationInstance(
        upa_shape=tuple(upa_shape), p_max_dbm=(float(p_max_dbm),) * bs.shape[0],
        noise_comm_dbm=noise_dbm, noise_sense_dbm=noise_dbm, speb_max_m2=1.0, snapshots=snapshots,
        carrier_hz=carrier_hz, bandwidth_hz=bandwidth_hz, num_sensing_streams=1,
        bs_positions_m=bs, target_position_m=target, H=H, alpha=alpha, speb_model=speb_model,
        user_positions_m=users,
    )
    CoopLocalizationInstance.from_dict(inst.to_dict())  # the file checks and bounds, before the floor SDP sees it
    if speb_max_m2 is None:
        if not (gamma_over_floor > 0 and math.isfinite(gamma_over_floor)):
            raise ValueError(f"gamma_over_floor must be positive and finite, got {gamma_over_floor}")
        gamma = gamma_over_floor * speb_floor_m2(inst)
    else:
        if not (speb_max_m2 > 0 and math.isfinite(speb_max_m2)):
            raise ValueError(f"speb_max_m2 must be positive and finite, got {speb_max_m2}")
        gamma = float(speb_max_m2)
    changes: dict[str, Any] = {"speb_max_m2": gamma}
    if csi_snr_db is not None:
        changes["H_estimate"] = mmwave.csi_estimate(rng, H, csi_snr_db)
    if position_error_m is not None:
        if position_error_range_m is not None:
            raise ValueError("give position_error_m or position_error_range_m, not both")
        if not (position_error_m >= 0 and math.isfinite(position_error_m)):
            raise ValueError(f"position_error_m must be >= 0, got {position_error_m}")
        position_error_range_m = (float(position_error_m), float(position_error_m) + 1.0)
    if position_error_range_m is not None:
        changes["target_position_estimate_m"] = mmwave.estimated_target_position(
            rng, target, error_range_m=position_error_range_m)
    return inst.with_params(**changes)


def small_preset(seed: int, **params: Any) -> CoopLocalizationInstance:
    """A tiny instance for tests and demos: BSs 1-2 of 002, 2x2 UPAs, K = 2 users, same target.

    ``params``: any of :func:`lian_preset`'s (e.g. ``gamma_over_floor``, ``p_max_dbm``)."""
    from isac.scenario import mmwave

    base: dict[str, Any] = {"bs_positions_m": mmwave.LIAN_BS_POSITIONS_M[:2], "upa_shape": (2, 2), "num_users": 2}
    return lian_preset(seed, **{**base, **params})


def lian_robust_preset(seed: int, **params: Any) -> CoopLocalizationInstance:
    """002 Fig. 9 operating point: CSI estimated at 20 dB SNR, target position off by [2, 3) m per axis.

    ``params``: any of :func:`lian_preset`'s (e.g. ``csi_snr_db``, ``position_error_range_m``)."""
    base: dict[str, Any] = {"csi_snr_db": 20.0}
    if "position_error_m" not in params:
        base["position_error_range_m"] = (2.0, 3.0)
    return lian_preset(seed, **{**base, **params})


small_preset.forwards_to = lian_preset  # type: ignore[attr-defined]  (accepts lian_preset's parameters)
lian_robust_preset.forwards_to = lian_preset  # type: ignore[attr-defined]

FAMILY = register_family(
    ProblemFamily(
        name=PROBLEM,
        paper="002 (lian)",
        summary="max sum rate (bit/s/Hz) s.t. SPEB <= gamma and per-BS power, N cooperating BSs with UPAs, one target",
        instance_type=CoopLocalizationInstance,
        presets={"lian": lian_preset, "lian-robust": lian_robust_preset, "small": small_preset},
        preset_docs={
            "lian": "002 Sec. IV-A geometry (3 BSs, 4x4 UPA, K = 5, 20 dBm), geometric 28 GHz channels, gamma = 2x SPEB floor",
            "lian-robust": "as lian, plus CSI estimates at 20 dB SNR and a [2, 3) m target position error",
            "small": "BSs 1-2, 2x2 UPA, K = 2 (tests, demos)",
        },
        decode_solution=decode_solution,
        encode_solution=encode_solution,
        format_doc=__doc__ or "",
    )
)
