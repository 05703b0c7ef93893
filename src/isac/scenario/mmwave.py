r"""28 GHz multi-BS channels for 002 (Lian et al.): a geometric generator and a DeepMIMO loader.

002 draws its user channels from the DeepMIMO "O1" ray-tracing scenario at
28 GHz (BSs 1-3), which cannot be downloaded here. :func:`geometric_channels` is
a documented stand-in with the paper's geometry as default
(:data:`LIAN_BS_POSITIONS_M`, :data:`LIAN_TARGET_POSITION_M`, Sec. IV-A), and
:func:`load_deepmimo` reads channels a user already has on disk.

Geometric model (one LoS path plus ``num_clusters`` single-bounce NLoS paths).
For BS :math:`n` (UPA ``array``, unit-norm steering :math:`\mathbf a`, eq. (8)) and
user :math:`k`,

.. math::

    \mathbf h_{k,n} = \sqrt{L}\Big( g_{0}\,\mathbf a(\theta^{0}_{n,k},\beta^{0}_{n,k})
        + \sum_{c=1}^{C} g_{c}\,\mathbf a(\theta^{c}_{n,k},\beta^{c}_{n,k})\Big),

so user k receives :math:`\mathbf h_{k,n}^H\mathbf x_n` and each path has full array
gain (:math:`\|\sqrt L\mathbf a\|^2 = L`). The LoS path leaves at the angles of the user
(eq. (5)-(6) with the user in place of the target) with
:math:`g_0=10^{-\mathrm{PL_{LoS}}(d)/20}e^{-j2\pi d/\lambda}`. Cluster c is a scatterer at a
random point within ``cluster_radius_m`` of the user (height in [0, 10] m), shared by all
BSs (spatially consistent); it leaves BS n towards the scatterer with
:math:`g_c = 10^{-\mathrm{PL_{NLoS}}(d_1+d_2)/20}\,e^{j\psi_c}/\sqrt C`, :math:`\psi_c\sim U[0,2\pi)`,
over the unfolded length :math:`d_1+d_2`. Path losses are 3GPP TR 38.901 UMi street
canyon at carrier :math:`f_c` in GHz, no shadowing (``d`` in metres):

.. math::

    \mathrm{PL_{LoS}} = 32.4 + 21\log_{10}d + 20\log_{10}f_c,\qquad
    \mathrm{PL_{NLoS}} = 32.4 + 31.9\log_{10}d + 20\log_{10}f_c \quad[\mathrm{dB}].

Target reflection gains follow the bistatic radar equation,
:math:`\alpha_{m,n} = \sqrt{\lambda^2\sigma_{\mathrm{RCS}}/((4\pi)^3 d_m^2 d_n^2)}\,
e^{-j2\pi(d_m+d_n)/\lambda + j\psi}` times the array gain L (see :func:`sensing_gains`),
with one random target phase :math:`\psi`, so
:math:`\alpha_{m,n}=\alpha_{n,m}` (reciprocity). 002 gives neither the RCS nor the noise;
the defaults (:data:`DEFAULT_RCS_M2`, :func:`thermal_noise_dbm`) are ours.

Estimation errors of 002 Sec. IV-D: :func:`csi_estimate` (relative CSI error of
variance 1/SNR via :func:`isac.scenario.channels.add_csi_error`) and
:func:`estimated_target_position` (via :func:`isac.scenario.channels.perturb_position`,
or the paper's "error in [a, b) metres per coordinate", see its docstring).

Shapes: positions ``[..., 3]`` metres (float64); channels ``H [N, L, K]`` complex128 with
``H[n, :, k]`` = :math:`\mathbf h_{k,n}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from isac.scenario.arrays import UPA
from isac.scenario.channels import add_csi_error, perturb_position
from isac.scenario.io import InstanceError
from isac.tensors import as_complex, as_real

SPEED_OF_LIGHT_M_S = 299_792_458.0
LIAN_CARRIER_HZ = 28e9
LIAN_BS_POSITIONS_M = ((236.0, 390.0, 6.0), (288.0, 390.0, 6.0), (236.0, 490.0, 6.0))
"""BSs 1-3 of DeepMIMO O1 as listed in 002 Sec. IV-A (metres)."""
LIAN_TARGET_POSITION_M = (244.0, 456.0, 22.0)
"""Target position of 002 Sec. IV-A (metres)."""
LIAN_USER_AREA_M = ((230.0, 300.0), (380.0, 500.0), 2.0)
"""Our default user drop area ``((x_min, x_max), (y_min, y_max), height)``: the rectangle
around the three BSs, users at 2 m (DeepMIMO O1 user height). 002 does not state it."""
DEFAULT_RCS_M2 = 10.0
"""Our default target radar cross section (a car-sized target); 002 gives none."""


def wavelength_m(carrier_hz: float) -> float:
    """Free-space wavelength :math:`c/f` in metres."""
    if not carrier_hz > 0:
        raise ValueError(f"carrier_hz must be positive, got {carrier_hz}")
    return SPEED_OF_LIGHT_M_S / carrier_hz


def thermal_noise_dbm(bandwidth_hz: float, noise_figure_db: float = 7.0) -> float:
    r"""Receiver noise power :math:`-174 + 10\log_{10}B + \mathrm{NF}` in dBm."""
    if not bandwidth_hz > 0:
        raise ValueError(f"bandwidth_hz must be positive, got {bandwidth_hz}")
    return -174.0 + 10.0 * math.log10(bandwidth_hz) + noise_figure_db


def path_loss_db(distance_m, carrier_hz: float, los: bool) -> torch.Tensor:
    """3GPP TR 38.901 UMi street-canyon path loss (LoS, or the simplified NLoS), dB, ``[...]``."""
    d = as_real(distance_m, "distance_m")
    if bool((d <= 0).any()):
        raise ValueError("distance_m must be positive")
    slope = 21.0 if los else 31.9
    return 32.4 + slope * torch.log10(d) + 20.0 * math.log10(carrier_hz / 1e9)


def _angles(origin: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Elevation (eq. (5)), azimuth (eq. (6)) and distance of ``point`` seen from ``origin``."""
    d = point - origin
    dist = torch.linalg.vector_norm(d, dim=-1)
    return torch.asin(d[..., 2] / dist), torch.atan2(d[..., 1], d[..., 0]), dist


def drop_users(rng: np.random.Generator, num_users: int, area=LIAN_USER_AREA_M,
               bs_positions_m=LIAN_BS_POSITIONS_M, min_distance_m: float = 5.0) -> torch.Tensor:
    """Users uniform in ``area`` at least ``min_distance_m`` from every BS (horizontally); ``[K, 3]``."""
    (x0, x1), (y0, y1), h = area
    bs = np.asarray(bs_positions_m, dtype=np.float64)
    out = []
    while len(out) < num_users:
        p = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1), h])
        if np.min(np.linalg.norm(bs[:, :2] - p[:2], axis=-1)) >= min_distance_m:
            out.append(p)
    return torch.as_tensor(np.array(out).reshape(num_users, 3), dtype=torch.float64)


def geometric_channels(
    rng: np.random.Generator,
    array: UPA,
    bs_positions_m,
    user_positions_m,
    carrier_hz: float = LIAN_CARRIER_HZ,
    num_clusters: int = 2,
    cluster_radius_m: float = 20.0,
) -> torch.Tensor:
    """User channels ``H [N, L, K]`` of the geometric model above (complex128)."""
    bs = as_real(bs_positions_m, "bs_positions_m")
    users = as_real(user_positions_m, "user_positions_m")
    if num_clusters < 0:
        raise ValueError(f"num_clusters must be >= 0, got {num_clusters}")
    lam = wavelength_m(carrier_hz)
    n_bs, k = bs.shape[0], users.shape[0]
    root_l = math.sqrt(array.size)
    th, be, d = _angles(bs[:, None, :], users[None, :, :])  # [N, K]
    amp = 10.0 ** (-path_loss_db(d, carrier_hz, los=True) / 20.0)
    g0 = torch.polar(amp, -2.0 * math.pi * d / lam)
    h = g0[..., None] * array.steering(th, be)  # [N, K, L]
    if num_clusters:
        # scatterer points near each user, shared by the BSs: [K, C, 3]
        r = cluster_radius_m * np.sqrt(rng.uniform(size=(k, num_clusters)))
        phi = rng.uniform(0.0, 2.0 * math.pi, size=(k, num_clusters))
        z = rng.uniform(0.0, 10.0, size=(k, num_clusters))
        u = users.numpy()
        sc = np.stack([u[:, None, 0] + r * np.cos(phi), u[:, None, 1] + r * np.sin(phi), z], axis=-1)
        sc_t = torch.as_tensor(sc, dtype=torch.float64)
        psi = torch.as_tensor(rng.uniform(0.0, 2.0 * math.pi, size=(n_bs, k, num_clusters)), dtype=torch.float64)
        th_c, be_c, d1 = _angles(bs[:, None, None, :], sc_t[None])  # [N, K, C]
        d2 = torch.linalg.vector_norm(sc_t - users[:, None, :], dim=-1)[None]  # [1, K, C]
        amp_c = 10.0 ** (-path_loss_db(d1 + d2, carrier_hz, los=False) / 20.0) / math.sqrt(num_clusters)
        g = torch.polar(amp_c, psi)
        h = h + (g[..., None] * array.steering(th_c, be_c)).sum(-2)
    return (root_l * h).transpose(-2, -1).contiguous()


def sensing_gains(rng: np.random.Generator, bs_positions_m, target_position_m, num_antennas: int,
                  carrier_hz: float = LIAN_CARRIER_HZ, rcs_m2: float = DEFAULT_RCS_M2) -> torch.Tensor:
    r"""Reflection coefficients ``alpha [N, N]`` (``alpha[m, n]``: BS m -> target -> BS n), bistatic radar equation.

    The radar-equation amplitude is for unit-gain elements; since eq. (8) normalises
    both steering vectors by :math:`1/\sqrt L`, the returned :math:`\alpha_{m,n}` carries
    the factor ``num_antennas`` = L (transmit and receive array gain), so that
    :math:`\alpha\,\mathbf a_n\mathbf a_m^H` is the physical echo channel. The random target
    phase multiplies the geometric gains as :math:`e^{j\psi}`, so :math:`\alpha e^{-j\psi}` is
    the same for every draw of one geometry (the SPEB floor's cache uses it).
    """
    if num_antennas < 1:
        raise ValueError(f"num_antennas must be >= 1, got {num_antennas}")
    if not rcs_m2 > 0:
        raise ValueError(f"rcs_m2 must be positive, got {rcs_m2}")
    bs = as_real(bs_positions_m, "bs_positions_m")
    t = as_real(target_position_m, "target_position_m")
    lam = wavelength_m(carrier_hz)
    d = torch.linalg.vector_norm(t - bs, dim=-1)  # [N]
    dd = d[:, None] * d[None, :]
    amp = torch.sqrt(lam**2 * rcs_m2 / ((4.0 * math.pi) ** 3 * dd**2))
    psi = float(rng.uniform(0.0, 2.0 * math.pi))
    return torch.polar(num_antennas * amp, -2.0 * math.pi * (d[:, None] + d[None, :]) / lam) * complex(
        math.cos(psi), math.sin(psi))


# --- estimation errors (002 Sec. IV-D) ------------------------------------------


def csi_estimate(rng: np.random.Generator, H, snr_db: float) -> torch.Tensor:
    r"""Noisy CSI :math:`\hat{\mathbf h}_{k,n}=\mathbf h_{k,n}+\mathbf e`, NMSE :math:`1/\mathrm{SNR}` per link.

    ``H [..., N, L, K]``; the error variance of each link is its mean per-antenna power
    divided by the linear SNR (a least-squares pilot estimate), via
    :func:`isac.scenario.channels.add_csi_error`.
    """
    h = as_complex(H, "H").transpose(-2, -1)  # [..., N, K, L]: one channel vector per row
    return add_csi_error(rng, h, 10.0 ** (-snr_db / 10.0), relative=True).transpose(-2, -1).contiguous()


def estimated_target_position(rng: np.random.Generator, target_position_m, *, std_m: float | None = None,
                              error_range_m: tuple[float, float] | None = None) -> torch.Tensor:
    r""":math:`\hat{\mathbf t}=\mathbf t+\Delta\mathbf t` ``[..., 3]``.

    Give one of ``std_m`` (Gaussian, :func:`isac.scenario.channels.perturb_position`)
    or ``error_range_m = (a, b)``: 002's "coordinate error randomly generated from a to
    b metres", which we read as :math:`|\Delta t_i|\sim U[a,b)` with a random sign
    per coordinate (the paper does not state the sign).
    """
    t = as_real(target_position_m, "target_position_m")
    if (std_m is None) == (error_range_m is None):
        raise ValueError("give exactly one of std_m or error_range_m")
    if std_m is not None:
        return perturb_position(rng, t, std_m)
    a, b = error_range_m
    if not 0 <= a <= b:
        raise ValueError(f"error_range_m must satisfy 0 <= a <= b, got {error_range_m}")
    mag = rng.uniform(a, b, size=tuple(t.shape)) if b > a else np.full(tuple(t.shape), float(a))
    sign = rng.choice([-1.0, 1.0], size=tuple(t.shape))
    return t + torch.as_tensor(mag * sign, dtype=torch.float64)


# --- DeepMIMO -------------------------------------------------------------------


@dataclass(frozen=True)
class DeepMimoChannels:
    """Channels read by :func:`load_deepmimo`.

    Attributes:
        H: ``[N, L, K]`` complex128, ``H[n, :, k]`` = h_{k,n} (user k receives h^H x).
        user_positions_m: ``[K, 3]`` float64 or None.
        bs_positions_m: ``[N, 3]`` float64 or None.
    """

    H: torch.Tensor
    user_positions_m: torch.Tensor | None
    bs_positions_m: torch.Tensor | None


def load_deepmimo(path, users=None, subcarrier: int = 0) -> DeepMimoChannels:
    r"""Read DeepMIMO channels the user already has on disk (never downloads).

    Supported layout: one MATLAB v5 ``.mat`` file (read with :func:`scipy.io.loadmat`)
    holding the DeepMIMO generator output for the N BSs, stacked:

    * ``channel``: complex ``[N, U, 1, L, S]`` - for each BS the DeepMIMO
      ``dataset[bs]['user']['channel']`` array ``[U, M_rx=1, M_tx=L, S subcarriers]``;
      a ``[N, U, L]`` array (one subcarrier) is accepted too;
    * ``user_location`` ``[U, 3]`` and ``bs_location`` ``[N, 3]`` (optional, metres).

    DeepMIMO's channel is :math:`\mathbf y = \mathbf H\mathbf x`; we return
    :math:`\mathbf h_{k,n}` = conj(``channel[n, k, 0, :, subcarrier]``) so that user k
    receives :math:`\mathbf h_{k,n}^H\mathbf x_n`. ``users`` (indices) selects K of the U users.
    The element order of the BS array must match the UPA used elsewhere (see
    :func:`isac.scenario.arrays.lian_upa`).

    Raises:
        InstanceError: one line naming the file or variable when the file is missing,
            not a v5 .mat file, or holds arrays of the wrong shape.
    """
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise InstanceError(f"DeepMIMO file {str(p)!r}: no such file (download DeepMIMO O1 yourself; isac never downloads)")
    try:
        mat = scipy.io.loadmat(str(p))
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InstanceError(f"DeepMIMO file {str(p)!r}: not a readable MATLAB v5 .mat file ({msg})") from None
    if "channel" not in mat:
        raise InstanceError(f"DeepMIMO file {str(p)!r}: channel: missing variable")
    ch = np.asarray(mat["channel"])
    if ch.ndim == 5:
        if ch.shape[2] != 1:
            raise InstanceError(f"channel: expected one receive antenna (shape [N, U, 1, L, S]), got {list(ch.shape)}")
        if not 0 <= subcarrier < ch.shape[4]:
            raise InstanceError(f"channel: subcarrier {subcarrier} out of range (S = {ch.shape[4]})")
        ch = ch[:, :, 0, :, subcarrier]
    elif ch.ndim != 3:
        raise InstanceError(f"channel: expected shape [N, U, 1, L, S] or [N, U, L], got {list(ch.shape)}")
    if not np.issubdtype(ch.dtype, np.number) or not np.isfinite(ch).all():
        raise InstanceError("channel: must hold finite numbers")
    if users is not None:
        idx = np.asarray(users, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= ch.shape[1]:
            raise InstanceError(f"users: indices must lie in [0, {ch.shape[1]})")
        ch = ch[:, idx]
    else:
        idx = None
    H = torch.as_tensor(np.conj(ch).transpose(0, 2, 1).astype(np.complex128))

    def _pos(name: str, rows: int | None, select) -> torch.Tensor | None:
        if name not in mat:
            return None
        v = np.asarray(mat[name], dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 3 or (rows is not None and v.shape[0] != rows):
            raise InstanceError(f"{name}: expected shape [{rows if rows is not None else '*'}, 3], got {list(v.shape)}")
        if select is not None:
            v = v[select]
        return torch.as_tensor(v)

    n_users_file = np.asarray(mat["channel"]).shape[1]
    return DeepMimoChannels(
        H=H,
        user_positions_m=_pos("user_location", n_users_file, idx),
        bs_positions_m=_pos("bs_location", H.shape[0], None),
    )
