r"""``beampattern-sinr`` (paper 004, Zhao et al.): beampattern matching under SINR constraints.

One BS with an M-antenna half-wavelength ULA,
:math:`\mathbf a(\theta) = [1, \dots, e^{-j2\pi(M-1)\Delta_a\sin\theta}]^T` (004 Sec. II-A,
:func:`isac.scenario.arrays.zhao_ula`, :math:`\Delta_a` = element spacing in wavelengths),
serves L single-antenna users and illuminates K target directions (004 eq. (11)):

.. math::

    \min_{\mathbf C, \mathbf S}\ \frac1N\sum_{n=1}^N
        \big|\beta^\star b(\theta_n) - \mathbf a^H(\theta_n)\mathbf R\,\mathbf a(\theta_n)\big|^2
    \quad\text{s.t.}\quad \mathbf R = \mathbf C\mathbf C^H + \mathbf S\mathbf S^H,\
    \mathrm{tr}(\mathbf R) = P_0,\ \Gamma_l \ge \Gamma_0\ \forall l,

with :math:`\Gamma_l` of eq. (9) (sensing streams interfere), :math:`b` of eq. (34) and
:math:`\beta^\star` the least-squares scale (see :mod:`isac.metrics.beampattern`).

File format (all keys required unless marked optional)::

    {"problem": "beampattern-sinr",
     "params": {"num_antennas": M, "power_w": P0 (> 0), "noise_w": sigma^2 (> 0),
                "sinr_db": Gamma0, "beam_width_deg": Delta (in (0, 180]),
                "grid_deg": [start, stop, step]  (half-open, -90 <= start < stop <= 90, step > 0),
                "spacing_wavelengths": 0.5   (optional)},
     "H": M x L complex (column l is h_l; user l receives h_l^H x; no zero column),
     "target_angles_deg": K reals in [-90, 90] (K >= 1),
     "user_positions_m": L x 3 reals (optional, provenance only),
     "bs_position_m": 3 reals (optional, provenance only)}

The grid is ``numpy.arange(start, stop, step)`` (stop excluded): 004's "-90 to 90 deg,
resolution 1 deg, N = 180" is ``[-90, 90, 1]``.

A solution is ``{"C": M x L complex, "S": M x M complex}``: column l of C is the beam
:math:`\mathbf c_l` of user l, S the sensing beamformer (004 eq. (1)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from isac.metrics.beampattern import angle_grid_deg, desired_beampattern, steering_matrix
from isac.scenario.arrays import ULA, zhao_ula
from isac.scenario.channels import path_loss, rayleigh
from isac.scenario.geometry import distance
from isac.scenario.io import MAX_SIZE, RESULT_FILE_KEYS, Fields, InstanceError, encode_complex, encode_real
from isac.scenario.problems import ProblemFamily, register_family
from isac.scenario.random import make_rng
from isac.units import db_to_lin

PROBLEM = "beampattern-sinr"
_PARAM_KEYS = ("num_antennas", "power_w", "noise_w", "sinr_db", "beam_width_deg", "grid_deg")

# 004 Sec. IV-A.
ZHAO_BS_POSITION_M = (0.0, -100.0, 20.0)
ZHAO_USER_REGION_M = ((5.0, 35.0), (-35.0, 35.0))  # x range, y range; z = 0
ZHAO_STEP_M = (1.0, 2.0)  # Sec. IV-B (Fig. 8): largest move per slot along x, y
ZHAO_FIG6_TARGETS_DEG = (-40.0, 0.0, 40.0)
ZHAO_FIG7_TARGETS_DEG = (-40.0, 15.0, 30.0)
ZHAO_REFERENCE_GAIN = 1e-3
ZHAO_PATH_LOSS_EXPONENT = 2.67
ZHAO_TARGET_RANGE_DEG = (-60.0, 60.0)
"""Range of the random target directions (our choice; 004 does not state it)."""


@dataclass(frozen=True)
class BeampatternSinrInstance:
    """One ``beampattern-sinr`` instance.

    Tensors: ``H [M, L]`` complex128, ``target_angles_deg [K]`` float64,
    ``user_positions_m [L, 3]`` and ``bs_position_m [3]`` float64 or None.
    Powers in watts, angles in degrees.
    """

    problem: ClassVar[str] = PROBLEM

    num_antennas: int
    power_w: float
    noise_w: float
    sinr_db: float
    beam_width_deg: float
    grid_deg: tuple[float, float, float]
    H: torch.Tensor
    target_angles_deg: torch.Tensor
    spacing_wavelengths: float = 0.5
    user_positions_m: torch.Tensor | None = None
    bs_position_m: torch.Tensor | None = None

    # --- derived quantities ---------------------------------------------------
    @property
    def num_users(self) -> int:
        return int(self.H.shape[-1])

    @property
    def num_targets(self) -> int:
        return int(self.target_angles_deg.shape[-1])

    @property
    def sinr_target(self) -> float:
        """Gamma0, linear."""
        return float(db_to_lin(self.sinr_db))

    @property
    def array(self) -> ULA:
        return zhao_ula(self.num_antennas, self.spacing_wavelengths)

    @property
    def grid(self) -> torch.Tensor:
        """Grid angles ``[N]`` in degrees."""
        return angle_grid_deg(*self.grid_deg)

    @property
    def steering(self) -> torch.Tensor:
        """``[N, M]`` steering vectors on the grid (rows)."""
        return steering_matrix(self.array, self.grid)

    @property
    def desired(self) -> torch.Tensor:
        """Desired pattern ``[N]`` of 004 eq. (34)."""
        return desired_beampattern(self.grid, self.target_angles_deg, self.beam_width_deg)

    def with_params(self, **changes) -> BeampatternSinrInstance:
        """A copy with some fields replaced (e.g. ``sinr_db``, ``grid_deg``)."""
        return replace(self, **changes)

    # --- file format ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "num_antennas": int(self.num_antennas),
            "power_w": float(self.power_w),
            "noise_w": float(self.noise_w),
            "sinr_db": float(self.sinr_db),
            "beam_width_deg": float(self.beam_width_deg),
            "grid_deg": [float(x) for x in self.grid_deg],
        }
        if self.spacing_wavelengths != 0.5:
            params["spacing_wavelengths"] = float(self.spacing_wavelengths)
        out: dict[str, Any] = {
            "problem": PROBLEM,
            "params": params,
            "H": encode_complex(self.H),
            "target_angles_deg": encode_real(self.target_angles_deg),
        }
        if self.user_positions_m is not None:
            out["user_positions_m"] = encode_real(self.user_positions_m)
        if self.bs_position_m is not None:
            out["bs_position_m"] = encode_real(self.bs_position_m)
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> BeampatternSinrInstance:
        f = Fields(obj)
        f.check_keys(["problem", "params", "H", "target_angles_deg"], ["user_positions_m", "bs_position_m"])
        if f.string("problem") != PROBLEM:
            raise InstanceError(f"problem: expected {PROBLEM!r}")
        p = f.sub("params")
        p.check_keys(_PARAM_KEYS, ["spacing_wavelengths"])
        m = p.integer("num_antennas", minimum=1)
        H = f.complex_array("H", (m, None))
        if H.shape[1] < 1:
            raise InstanceError("H: needs at least one user column")
        zero = (H.abs().sum(0) == 0).nonzero()
        if zero.numel():
            raise InstanceError(f"H: column {int(zero[0])} is zero (a user without a channel)")
        targets = f.real_array("target_angles_deg", (None,))
        if targets.shape[0] < 1:
            raise InstanceError("target_angles_deg: needs at least one target")
        if bool((targets.abs() > 90).any()):
            raise InstanceError("target_angles_deg: angles must lie in [-90, 90]")
        grid = p.real_array("grid_deg", (3,))
        start, stop, step = (float(x) for x in grid)
        if not (-90.0 <= start < stop <= 90.0):
            raise InstanceError(f"params.grid_deg: need -90 <= start < stop <= 90, got [{start:g}, {stop:g}]")
        if step <= 0:
            raise InstanceError(f"params.grid_deg: step must be > 0, got {step:g}")
        if (stop - start) / step > MAX_SIZE:
            raise InstanceError(f"params.grid_deg: at most {MAX_SIZE} grid points, got {(stop - start) / step:.6g}")
        users = f.real_array("user_positions_m", (H.shape[1], 3)) if f.has("user_positions_m") else None
        bs = f.real_array("bs_position_m", (3,)) if f.has("bs_position_m") else None
        return cls(
            num_antennas=m,
            power_w=p.number("power_w", exclusive_minimum=0.0),
            noise_w=p.number("noise_w", exclusive_minimum=0.0),
            sinr_db=p.number("sinr_db", decibels=True),
            beam_width_deg=p.number("beam_width_deg", exclusive_minimum=0.0, maximum=180.0),
            grid_deg=(start, stop, step),
            H=H,
            target_angles_deg=targets,
            spacing_wavelengths=p.number("spacing_wavelengths", exclusive_minimum=0.0)
            if p.has("spacing_wavelengths") else 0.5,
            user_positions_m=users,
            bs_position_m=bs,
        )


def decode_solution(obj: Mapping[str, Any], inst: BeampatternSinrInstance) -> dict[str, torch.Tensor]:
    f = Fields(obj)
    f.check_keys(["C", "S"], RESULT_FILE_KEYS)
    m = inst.num_antennas
    return {"C": f.complex_array("C", (m, inst.num_users)), "S": f.complex_array("S", (m, m))}


def encode_solution(sol: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return {"C": encode_complex(sol["C"]), "S": encode_complex(sol["S"])}


# --- presets -----------------------------------------------------------------


def draw_target_angles_deg(
    rng: np.random.Generator, num_targets: int, low_deg: float, high_deg: float, min_separation_deg: float
) -> np.ndarray:
    r"""K directions uniform on ``[low, high]`` subject to pairwise separation >= ``min_separation``.

    Exact sampling without rejection: draw K sorted uniforms on
    :math:`[\text{low}, \text{high}-(K-1)s]` and add :math:`i\cdot s` to the i-th. This maps
    the sorted uniform distribution on the shrunken interval one-to-one onto the uniform
    distribution over all sorted configurations with gaps >= s. Returned sorted ascending.
    """
    span = high_deg - low_deg - (num_targets - 1) * min_separation_deg
    if span < 0:
        raise ValueError(
            f"cannot place {num_targets} targets {min_separation_deg:g} deg apart in [{low_deg:g}, {high_deg:g}]"
        )
    u = np.sort(rng.uniform(low_deg, low_deg + span, size=num_targets))
    return u + min_separation_deg * np.arange(num_targets)


def make_zhao(
    seed: int,
    *,
    num_antennas: int = 10,
    num_users: int = 2,
    num_targets: int = 3,
    sinr_db: float = 8.0,
    power_w: float = 1.0,
    noise_w: float = 1e-10,
    beam_width_deg: float = 10.0,
    grid_deg: tuple[float, float, float] = (-90.0, 90.0, 1.0),
    grid_points: int | None = None,
    target_angles_deg=None,
    target_range_deg: tuple[float, float] = ZHAO_TARGET_RANGE_DEG,
    min_separation_deg: float | None = None,
    user_xy_m=None,
) -> BeampatternSinrInstance:
    r"""004's setting (Sec. IV-A) drawn from ``seed``.

    M = 10, L = 2, K = 3, P0 = 1 W, sigma^2 = 1e-10 W, Gamma0 = 8 dB, Delta = 10 deg,
    grid -90:1:89 deg (N = 180); BS at (0, -100, 20) m; users i.i.d. uniform in
    x in [5, 35], y in [-35, 35], z = 0 m; Rayleigh channels
    :math:`\mathbf h_l = \sqrt{\alpha_l}\,\mathcal{CN}(\mathbf 0,\mathbf I)` with
    :math:`\alpha_l = 10^{-3} d_l^{-2.67}` (power gain).

    Target directions (004 does not say how they are drawn): unless
    ``target_angles_deg`` is given, K directions uniform on ``target_range_deg``
    = [-60, 60] deg with pairwise separation >= ``min_separation_deg`` (default
    Delta, so the windows of eq. (34) do not overlap; 004's Fig. 7 case {-40, 15, 30}
    is 15 deg apart, so a 2*Delta rule would exclude the paper's own example).

    ``grid_points`` = N replaces ``grid_deg`` by N points from -90 deg with step 180/N deg
    (004 Table II: N in {180, 60, 30, 10}).

    ``user_xy_m`` (L x 2, metres) places the users instead of drawing them (z = 0); it must
    have ``num_users`` rows. :func:`make_zhao_dynamic` uses it for moving users.

    Draw order from ``make_rng(seed)``: user x, user y (each [L]; skipped when
    ``user_xy_m`` is given), target angles, then the [M, L] small-scale fading.
    """
    if grid_points is not None:
        if int(grid_points) < 1:
            raise ValueError(f"grid_points must be >= 1, got {grid_points}")
        grid_deg = (-90.0, 90.0, 180.0 / int(grid_points))
    rng = make_rng(seed)
    if user_xy_m is None:
        x, y = _draw_user_xy(rng, num_users)
    else:
        xy = np.asarray(user_xy_m, dtype=np.float64)
        if xy.shape != (num_users, 2) or not np.all(np.isfinite(xy)):
            raise ValueError(f"user_xy_m must be {num_users} x 2 finite positions, got shape {xy.shape}")
        x, y = xy[:, 0], xy[:, 1]
    users = torch.as_tensor(np.stack([x, y, np.zeros(num_users)], axis=-1), dtype=torch.float64)
    bs = torch.as_tensor(ZHAO_BS_POSITION_M, dtype=torch.float64)
    if target_angles_deg is None:
        sep = beam_width_deg if min_separation_deg is None else min_separation_deg
        angles = draw_target_angles_deg(rng, num_targets, *target_range_deg, sep)
    else:
        angles = np.asarray(target_angles_deg, dtype=np.float64).reshape(-1)
    alpha = path_loss(distance(bs, users), ZHAO_REFERENCE_GAIN, ZHAO_PATH_LOSS_EXPONENT)  # [L]
    H = rayleigh(rng, (num_antennas, num_users), alpha)  # gain broadcasts over columns
    return BeampatternSinrInstance(
        num_antennas=num_antennas, power_w=float(power_w), noise_w=float(noise_w), sinr_db=float(sinr_db),
        beam_width_deg=float(beam_width_deg), grid_deg=tuple(float(g) for g in grid_deg), H=H,
        target_angles_deg=torch.as_tensor(angles, dtype=torch.float64),
        user_positions_m=users, bs_position_m=bs,
    )


def make_zhao_fixed_a(seed: int, **kwargs) -> BeampatternSinrInstance:
    """004 Fig. 6: targets at {-40, 0, 40} deg, users and channels drawn from ``seed``."""
    return make_zhao(seed, target_angles_deg=ZHAO_FIG6_TARGETS_DEG, **kwargs)


def make_zhao_fixed_b(seed: int, **kwargs) -> BeampatternSinrInstance:
    """004 Fig. 7: targets at {-40, 15, 30} deg, users and channels drawn from ``seed``."""
    return make_zhao(seed, target_angles_deg=ZHAO_FIG7_TARGETS_DEG, **kwargs)


def _draw_user_xy(rng: np.random.Generator, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """004's user placement: x then y, each [L] uniform on the user region."""
    (x0, x1), (y0, y1) = ZHAO_USER_REGION_M
    return rng.uniform(x0, x1, size=num_users), rng.uniform(y0, y1, size=num_users)


def reflect_into(v: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold ``v`` into ``[low, high]`` by mirror reflection at the ends (any distance outside)."""
    width = high - low
    u = np.mod(np.asarray(v, dtype=np.float64) - low, 2.0 * width)
    return low + np.where(u > width, 2.0 * width - u, u)


def zhao_user_track(seed: int, num_users: int, slot: int,
                    step_m: tuple[float, float] = ZHAO_STEP_M) -> np.ndarray:
    r"""Positions (L x 2, metres) of 004's moving users after ``slot`` time slots.

    Slot 0: uniform in the user region (as :func:`make_zhao`). After each slot every
    user moves by independent uniform steps in :math:`[-s_x, s_x]` along x and
    :math:`[-s_y, s_y]` along y (004 Sec. IV-B: 1 m and 2 m), and is mirrored back
    into the region if it would leave it (004 does not say what happens at the edge;
    reflection keeps the uniform distribution stationary, so every slot is distributed
    like an i.i.d. draw and the models stay inside their training region). Draw order
    from ``make_rng(seed)``: x, y at slot 0, then per slot the x steps and the y steps.
    """
    if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or slot < 0:
        raise ValueError(f"slot must be an integer >= 0, got {slot!r}")
    slot = int(slot)
    sx, sy = (float(v) for v in step_m)
    if not (sx >= 0 and sy >= 0):
        raise ValueError(f"step_m must be two non-negative step sizes, got {step_m}")
    rng = make_rng(seed)
    (x0, x1), (y0, y1) = ZHAO_USER_REGION_M
    x, y = _draw_user_xy(rng, num_users)
    for _ in range(slot):
        x = reflect_into(x + rng.uniform(-sx, sx, size=num_users), x0, x1)
        y = reflect_into(y + rng.uniform(-sy, sy, size=num_users), y0, y1)
    return np.stack([x, y], axis=-1)


def make_zhao_dynamic(
    seed: int,
    *,
    slot: int = 0,
    step_m: tuple[float, float] = ZHAO_STEP_M,
    target_angles_deg=ZHAO_FIG7_TARGETS_DEG,
    **kwargs,
) -> BeampatternSinrInstance:
    r"""004 Fig. 8's dynamic scenario: slot ``slot`` of the user trajectory drawn from ``seed``.

    User positions follow :func:`zhao_user_track` (a random walk of 1 m along x and 2 m
    along y per slot, reflected at the region's edges). The small-scale fading is drawn
    afresh in every slot from ``SeedSequence([seed, slot])``: a move of a metre spans many
    wavelengths, so the Rayleigh coefficients decorrelate between slots. Targets default
    to 004's Fig. 7 set {-40, 15, 30} deg (pass ``target_angles_deg=None`` for random
    directions per slot); other parameters as :func:`make_zhao`. Sweeps with
    ``slots = T`` run trials as consecutive slots of one trajectory.
    """
    num_users = int(kwargs.get("num_users", 2))
    xy = zhao_user_track(seed, num_users, slot, step_m)
    return make_zhao(np.random.SeedSequence([int(seed), int(slot)]), user_xy_m=xy,
                     target_angles_deg=target_angles_deg, **kwargs)


def make_small(seed: int, **kwargs) -> BeampatternSinrInstance:
    """A tiny instance for tests: M = 4, L = 2, K = 1, otherwise as :func:`make_zhao`."""
    kw: dict[str, Any] = {"num_antennas": 4, "num_users": 2, "num_targets": 1}
    kw.update(kwargs)
    return make_zhao(seed, **kw)


for _wrapper in (make_zhao_fixed_a, make_zhao_fixed_b, make_zhao_dynamic, make_small):
    _wrapper.forwards_to = make_zhao  # type: ignore[attr-defined]  (sweeps may set make_zhao's parameters)

FAMILY = register_family(
    ProblemFamily(
        name=PROBLEM,
        paper="004 (zhao)",
        summary="min beampattern MSE s.t. tr(R) = P0 and SINR_l >= Gamma0, one BS, ULA, L users, K target directions",
        instance_type=BeampatternSinrInstance,
        presets={
            "zhao": make_zhao,
            "zhao-fixed-a": make_zhao_fixed_a,
            "zhao-fixed-b": make_zhao_fixed_b,
            "zhao-dynamic": make_zhao_dynamic,
            "small": make_small,
        },
        preset_docs={
            "zhao": "004 Sec. IV-A: M = 10, L = 2, K = 3 random targets in [-60, 60] deg, Gamma0 = 8 dB",
            "zhao-fixed-a": "as zhao with targets {-40, 0, 40} deg (004 Fig. 6)",
            "zhao-fixed-b": "as zhao with targets {-40, 15, 30} deg (004 Fig. 7)",
            "zhao-dynamic": "as zhao-fixed-b with users moving up to 1 m (x) and 2 m (y) per slot (004 Fig. 8); "
                            "parameter slot",
            "small": "tiny M = 4, L = 2, K = 1 (tests, demos)",
        },
        decode_solution=decode_solution,
        encode_solution=encode_solution,
        format_doc=__doc__ or "",
    )
)
