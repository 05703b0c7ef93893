r"""``crlb-sumrate`` (paper 003, Fang et al.): sum rate vs angle+RCS CRLB balancing.

One BS with an :math:`N_t = N_{th}N_{tv}` UPA transmitting and an :math:`N_r` UPA
receiving echoes, K single-antenna users, M point targets, L snapshots:

.. math::

    \max_{\mathbf W}\ \delta_c\sum_{k=1}^K R_k(\mathbf W) - \delta_s\,\mathrm{tr}\big(\mathbf F^{-1}(\mathbf W)\big)
    \quad\text{s.t.}\quad \mathrm{tr}(\mathbf W\mathbf W^H)\le P_t,

with :math:`\mathbf W=[\mathbf W_c,\mathbf W_s]\in\mathbb C^{N_t\times(K+N_s)}`,
rates in nats (eq. (2)) and F of Lemma 1 over :math:`[\theta,\phi,\Re\alpha,\Im\alpha]`.

File format (all keys required unless marked optional)::

    {"problem": "crlb-sumrate",
     "params": {"tx_shape": [Nth, Ntv], "rx_shape": [Nrh, Nrv], "snapshots": L,
                "delta_c": .., "delta_s": .., "p_max_dbm": .., "noise_comm_dbm": ..,
                "noise_sense_dbm": .., "num_sensing_streams": Ns,
                "element_order": "first-major" | "second-major"   (optional)},
     "H": Nt x K complex (column k is h_k; user k receives h_k^H x),
     "alpha": M complex, "theta_rad": M real, "phi_rad": M real,
     "W0": Nt x (K+Ns) complex (optional initial point)}

Steering vectors follow 003's text, :math:`\mathbf a=\mathbf a_h\otimes\mathbf a_v`
(element index :math:`n_h N_v + n_v`); ``"element_order": "second-major"``
selects the authors' MATLAB order ``kron(a_v, a_h)``.

A solution is ``{"W": Nt x (K+Ns) complex}``: K communication beams, then Ns
sensing streams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from isac.scenario.arrays import UPA, fang_upa
from isac.scenario.io import MAX_SIZE, RESULT_FILE_KEYS, Fields, InstanceError, encode_complex, encode_real
from isac.scenario.problems import ProblemFamily, register_family
from isac.scenario.random import complex_normal, make_rng
from isac.units import dbm_to_watt

PROBLEM = "crlb-sumrate"
_PARAM_KEYS = (
    "tx_shape", "rx_shape", "snapshots", "delta_c", "delta_s", "p_max_dbm",
    "noise_comm_dbm", "noise_sense_dbm", "num_sensing_streams",
)


@dataclass(frozen=True)
class CrlbSumrateInstance:
    """One ``crlb-sumrate`` instance. Tensors: ``H [Nt, K]``, ``alpha [M]`` complex128,
    ``theta_rad, phi_rad [M]`` float64, ``W0 [Nt, K+Ns]`` or None."""

    problem: ClassVar[str] = PROBLEM

    tx_shape: tuple[int, int]
    rx_shape: tuple[int, int]
    snapshots: int
    delta_c: float
    delta_s: float
    p_max_dbm: float
    noise_comm_dbm: float
    noise_sense_dbm: float
    num_sensing_streams: int
    H: torch.Tensor
    alpha: torch.Tensor
    theta_rad: torch.Tensor
    phi_rad: torch.Tensor
    W0: torch.Tensor | None = None
    element_order: str = "first-major"

    # --- derived quantities ---------------------------------------------------
    @property
    def num_tx(self) -> int:
        return self.tx_shape[0] * self.tx_shape[1]

    @property
    def num_users(self) -> int:
        return int(self.H.shape[-1])

    @property
    def num_targets(self) -> int:
        return int(self.alpha.shape[-1])

    @property
    def num_streams(self) -> int:
        return self.num_users + self.num_sensing_streams

    @property
    def tx_array(self) -> UPA:
        return fang_upa(*self.tx_shape, element_order=self.element_order)

    @property
    def rx_array(self) -> UPA:
        return fang_upa(*self.rx_shape, element_order=self.element_order)

    @property
    def p_max_w(self) -> float:
        return float(dbm_to_watt(self.p_max_dbm))

    @property
    def noise_comm_w(self) -> float:
        return float(dbm_to_watt(self.noise_comm_dbm))

    @property
    def noise_sense_w(self) -> float:
        return float(dbm_to_watt(self.noise_sense_dbm))

    def with_params(self, **changes) -> CrlbSumrateInstance:
        """A copy with some fields replaced (e.g. ``delta_c``, ``snapshots``)."""
        return replace(self, **changes)

    # --- file format ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "tx_shape": list(self.tx_shape),
            "rx_shape": list(self.rx_shape),
            "snapshots": int(self.snapshots),
            "delta_c": float(self.delta_c),
            "delta_s": float(self.delta_s),
            "p_max_dbm": float(self.p_max_dbm),
            "noise_comm_dbm": float(self.noise_comm_dbm),
            "noise_sense_dbm": float(self.noise_sense_dbm),
            "num_sensing_streams": int(self.num_sensing_streams),
        }
        if self.element_order != "first-major":
            params["element_order"] = self.element_order
        out: dict[str, Any] = {
            "problem": PROBLEM,
            "params": params,
            "H": encode_complex(self.H),
            "alpha": encode_complex(self.alpha),
            "theta_rad": encode_real(self.theta_rad),
            "phi_rad": encode_real(self.phi_rad),
        }
        if self.W0 is not None:
            out["W0"] = encode_complex(self.W0)
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> CrlbSumrateInstance:
        f = Fields(obj)
        f.check_keys(["problem", "params", "H", "alpha", "theta_rad", "phi_rad"], ["W0"])
        if f.string("problem") != PROBLEM:
            raise InstanceError(f"problem: expected {PROBLEM!r}")
        p = f.sub("params")
        p.check_keys(_PARAM_KEYS, ["element_order"])
        tx_shape = p.int_list("tx_shape", 2)
        rx_shape = p.int_list("rx_shape", 2)
        nt = tx_shape[0] * tx_shape[1]
        if rx_shape[0] * rx_shape[1] > MAX_SIZE:
            raise InstanceError(f"params.rx_shape: at most {MAX_SIZE} receive elements, got {rx_shape[0] * rx_shape[1]}")
        H = f.complex_array("H", (nt, None))
        k = H.shape[1]
        if k < 1:
            raise InstanceError("H: needs at least one user column")
        alpha = f.complex_array("alpha", (None,))
        m = alpha.shape[0]
        if m < 1:
            raise InstanceError("alpha: needs at least one target")
        if bool((alpha == 0).any()):
            raise InstanceError("alpha: every target needs a non-zero reflection coefficient")
        ns = p.integer("num_sensing_streams", minimum=0, maximum=MAX_SIZE)
        inst = cls(
            tx_shape=tx_shape,
            rx_shape=rx_shape,
            snapshots=p.integer("snapshots", minimum=1),
            delta_c=p.number("delta_c", minimum=0.0),
            delta_s=p.number("delta_s", minimum=0.0),
            p_max_dbm=p.number("p_max_dbm", decibels=True),
            noise_comm_dbm=p.number("noise_comm_dbm", decibels=True),
            noise_sense_dbm=p.number("noise_sense_dbm", decibels=True),
            num_sensing_streams=ns,
            H=H,
            alpha=alpha,
            theta_rad=f.real_array("theta_rad", (m,)),
            phi_rad=f.real_array("phi_rad", (m,)),
            W0=f.complex_array("W0", (nt, k + ns)) if f.has("W0") else None,
            element_order=p.string("element_order", ("first-major", "second-major"))
            if p.has("element_order") else "first-major",
        )
        if inst.delta_c == 0 and inst.delta_s == 0:
            raise InstanceError("params.delta_c: delta_c and delta_s cannot both be zero")
        return inst


def decode_solution(obj: Mapping[str, Any], inst: CrlbSumrateInstance) -> dict[str, torch.Tensor]:
    f = Fields(obj)
    f.check_keys(["W"], RESULT_FILE_KEYS)
    return {"W": f.complex_array("W", (inst.num_tx, inst.num_streams))}


def encode_solution(sol: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return {"W": encode_complex(sol["W"])}


# --- presets -----------------------------------------------------------------


def fang_preset(
    seed: int,
    *,
    tx_shape: tuple[int, int] = (4, 4),
    rx_shape: tuple[int, int] = (5, 4),
    num_users: int = 4,
    num_targets: int = 2,
    snapshots: int = 30,
    num_sensing_streams: int | None = None,
    delta_c: float = 0.25,
    delta_s: float = 1.0,
    p_max_dbm: float = 10.0,
    noise_dbm: float = 0.0,
    angle_range_rad: float = math.pi / 3,
    rcs_spread: str = "normal",
    num_tx: int | None = None,
) -> CrlbSumrateInstance:
    r"""003's default setting (Sec. V) drawn from ``seed``.

    N_t = 4x4, N_r = 5x4, K = 4, M = 2, N_s = N_t, delta_s = 1, delta_c = 0.25,
    P_t = 10 dBm, sigma_c^2 = sigma_s^2 = 0 dBm, Rayleigh H ~ CN(0, I).

    Two choices follow the authors' published figure scripts rather than the
    text: L = 30 snapshots (the text says 64), angles theta, phi ~ U(-pi/3, pi/3)
    (the text says U(-2pi/3, 2pi/3)), and alpha_m = 0.1 (1 + 0.2 n) e^{j 2 pi u}
    with n ~ N(0, 1), u ~ U(0, 1) (the text has n ~ U(0, 1)). The ``fang-text``
    preset uses the text's values instead.

    ``num_tx`` (for sweeps over N_t, Table I / Fig. 5) overrides ``tx_shape`` with a
    ``(num_tx / 4) x 4`` UPA (4 vertical rows as in the default 4 x 4); it must be a
    multiple of 4.
    """
    if num_tx is not None:
        if num_tx < 4 or num_tx % 4:
            raise ValueError(f"num_tx must be a positive multiple of 4, got {num_tx}")
        tx_shape = (num_tx // 4, 4)
    if rcs_spread not in ("normal", "uniform"):
        raise ValueError(f"rcs_spread must be 'normal' or 'uniform', got {rcs_spread!r}")
    rng = make_rng(seed)
    nt = tx_shape[0] * tx_shape[1]
    ns = nt if num_sensing_streams is None else num_sensing_streams
    if rcs_spread == "normal":
        mag = 0.1 * (1.0 + 0.2 * rng.standard_normal(num_targets))
        phase = 2 * math.pi * rng.uniform(size=num_targets)
    else:
        nu = rng.uniform(size=num_targets)
        mag, phase = 0.1 * (1.0 + 0.2 * nu), 2 * math.pi * nu
    alpha = torch.as_tensor(mag * np.exp(1j * phase), dtype=torch.complex128)
    theta = torch.as_tensor(rng.uniform(-angle_range_rad, angle_range_rad, num_targets), dtype=torch.float64)
    phi = torch.as_tensor(rng.uniform(-angle_range_rad, angle_range_rad, num_targets), dtype=torch.float64)
    H = complex_normal(rng, (nt, num_users))
    return CrlbSumrateInstance(
        tx_shape=tuple(tx_shape), rx_shape=tuple(rx_shape), snapshots=snapshots,
        delta_c=delta_c, delta_s=delta_s, p_max_dbm=p_max_dbm,
        noise_comm_dbm=noise_dbm, noise_sense_dbm=noise_dbm,
        num_sensing_streams=ns, H=H, alpha=alpha, theta_rad=theta, phi_rad=phi,
    )


def fang_text_preset(
    seed: int, *, snapshots: int = 64, angle_range_rad: float = 2 * math.pi / 3, rcs_spread: str = "uniform", **kwargs
) -> CrlbSumrateInstance:
    """003's setting as its Sec. V text states it: L = 64, angles ~ U(-2pi/3, 2pi/3), nu ~ U(0, 1).

    Other keyword parameters are those of :func:`fang_preset`.
    """
    return fang_preset(seed, snapshots=snapshots, angle_range_rad=angle_range_rad, rcs_spread=rcs_spread, **kwargs)


def small_preset(
    seed: int,
    *,
    tx_shape: tuple[int, int] = (2, 2),
    rx_shape: tuple[int, int] = (2, 2),
    num_users: int = 2,
    num_targets: int = 1,
    num_sensing_streams: int = 2,
    snapshots: int = 30,
    delta_c: float = 0.25,
    delta_s: float = 1.0,
    p_max_dbm: float = 10.0,
    noise_dbm: float = 0.0,
) -> CrlbSumrateInstance:
    """A tiny instance for tests and demos: 2x2 transmit, 2x2 receive, K = 2, M = 1, N_s = 2."""
    return fang_preset(
        seed, tx_shape=tx_shape, rx_shape=rx_shape, num_users=num_users, num_targets=num_targets,
        num_sensing_streams=num_sensing_streams, snapshots=snapshots, delta_c=delta_c, delta_s=delta_s,
        p_max_dbm=p_max_dbm, noise_dbm=noise_dbm,
    )


FAMILY = register_family(
    ProblemFamily(
        name=PROBLEM,
        paper="003 (fang)",
        summary="max delta_c * sum rate - delta_s * tr(F^-1) under total power, one BS, UPA, K users, M targets",
        instance_type=CrlbSumrateInstance,
        presets={"fang": fang_preset, "fang-text": fang_text_preset, "small": small_preset},
        preset_docs={
            "fang": "003 Sec. V defaults as in the authors' scripts (L = 30)",
            "fang-text": "003 Sec. V defaults as in the text (L = 64, wider angles)",
            "small": "tiny 2x2 UPA, K = 2, M = 1 (tests, demos)",
        },
        decode_solution=decode_solution,
        encode_solution=encode_solution,
        format_doc=__doc__ or "",
    )
)
