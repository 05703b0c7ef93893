r"""Closed-form baselines that need no optimisation: MRT and zero-forcing.

Communication beams point along MRT (:math:`\mathbf h_k/\|\mathbf h_k\|`) or ZF
(columns of :math:`\mathbf H(\mathbf H^H\mathbf H)^{-1}`, normalised) directions.

``crlb-sumrate`` (003): a fraction ``comm_power_fraction`` of :math:`P_t` is
split equally over the K user beams; the rest is split equally over
:math:`\min(N_s, M)` sensing streams, stream m being the transmit steering
vector :math:`\mathbf a(\theta_m,\phi_m)` of target m (normalised); further
sensing columns are zero. With :math:`N_s = 0` all power goes to the users.
The point uses the full budget, so it is always feasible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from isac.scenario.instances.crlb_sumrate import PROBLEM as CRLB_SUMRATE
from isac.solvers.base import Solver, Status
from isac.solvers.registry import register_solver
from isac.tensors import hermitian


def mrt_directions(H: torch.Tensor) -> torch.Tensor:
    """Unit-norm MRT beams ``[..., N, K]`` for channels ``H [..., N, K]``."""
    return H / torch.linalg.vector_norm(H, dim=-2, keepdim=True)


def zf_directions(H: torch.Tensor) -> torch.Tensor:
    r"""Unit-norm zero-forcing beams ``[..., N, K]``: :math:`h_j^H w_k = 0` for :math:`j\ne k`.

    Raises ``torch.linalg.LinAlgError`` when K > N or the channels are linearly dependent.
    """
    n, k = H.shape[-2], H.shape[-1]
    if k > n:
        raise torch.linalg.LinAlgError(f"zero-forcing needs K <= N antennas, got K={k}, N={n}")
    gram = hermitian(H) @ H
    W = H @ torch.linalg.inv(gram)
    return W / torch.linalg.vector_norm(W, dim=-2, keepdim=True)


def _crlb_sumrate_point(inst, directions: torch.Tensor, comm_power_fraction: float) -> torch.Tensor:
    k, ns, m = inst.num_users, inst.num_sensing_streams, inst.num_targets
    p = inst.p_max_w
    rho = 1.0 if ns == 0 else comm_power_fraction
    W = torch.zeros(inst.num_tx, k + ns, dtype=torch.complex128)
    W[:, :k] = directions * math.sqrt(rho * p / k)
    used = min(ns, m)
    if used:
        a = inst.tx_array.steering(inst.theta_rad[:used], inst.phi_rad[:used])  # [used, Nt]
        a = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True)
        W[:, k:k + used] = a.T * math.sqrt((1 - rho) * p / used)
    return W


@dataclass
class _CommBaseline(Solver):
    comm_power_fraction: float = 0.5
    """Share of the power budget given to the user beams when N_s > 0 (the rest to sensing)."""

    problems: ClassVar[tuple[str, ...]] = (CRLB_SUMRATE,)

    def __post_init__(self) -> None:
        if not 0.0 <= self.comm_power_fraction <= 1.0:
            raise ValueError(f"comm_power_fraction must be in [0, 1], got {self.comm_power_fraction}")

    def _directions(self, H: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _solve(self, inst):
        W = _crlb_sumrate_point(inst, self._directions(inst.H), self.comm_power_fraction)
        return Status.CONVERGED, "closed form", {"W": W}, [], 1


@register_solver
@dataclass
class MRT(_CommBaseline):
    """Maximum-ratio transmission for the users, target steering beams for sensing."""

    name: ClassVar[str] = "mrt"
    description: ClassVar[str] = "MRT user beams + target steering sensing streams (closed form)"

    def _directions(self, H):
        return mrt_directions(H)


@register_solver
@dataclass
class ZF(_CommBaseline):
    """Zero-forcing for the users, target steering beams for sensing."""

    name: ClassVar[str] = "zf"
    description: ClassVar[str] = "zero-forcing user beams + target steering sensing streams (closed form)"

    def _directions(self, H):
        return zf_directions(H)
