r"""Metrics of ``coop-localization`` (002): rates in bit/s/Hz, SPEB in m², per-BS power.

Joint transmission (eq. (2)-(4)) stacks the BSs' channels and beams,
:math:`\mathbf h_k\in\mathbb C^{NL}`, :math:`\mathbf W\in\mathbb C^{NL\times(K+N_s)}`,
and reuses :func:`isac.metrics.comm.rates_nats` (the sensing streams interfere with
every user as in eq. (3)); rates are reported in bit/s/Hz as in 002.

``objective = sum_rate_bps_hz`` (eq. (32a)); feasible when every BS meets its budget,
:math:`\|\mathbf P_n\|_F^2\le P_n(1+\texttt{POWER_RTOL})` (32b), and
:math:`\mathrm{SPEB}\le\gamma(1+\texttt{SPEB_RTOL})` (32c), always on the true
channels and target position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from isac.metrics.bounds.lian import lian_speb, stack_beams
from isac.metrics.comm import rates_nats, sinr
from isac.metrics.evaluate import POWER_RTOL, register_evaluator
from isac.scenario.arrays import UPA
from isac.scenario.instances.coop_localization import PROBLEM, CoopLocalizationInstance
from isac.units import nats_to_bits

SPEB_RTOL = 1e-6
"""An SPEB threshold counts as met when ``speb <= gamma * (1 + SPEB_RTOL)``."""


def objective_terms(inst: CoopLocalizationInstance, W: torch.Tensor) -> dict[str, torch.Tensor]:
    """Differentiable pieces for beams ``W [..., N, L, K+Ns]`` (leading dims: a batch of solutions).

    Returns ``rates_bps_hz [..., K]``, ``sum_rate_bps_hz [...]``, ``sinr [..., K]``,
    ``speb_m2 [...]``, ``power_w [..., N]`` (per BS).
    """
    Ws = stack_beams(W)
    rates = nats_to_bits(rates_nats(inst.H_stacked, Ws, inst.noise_comm_w))
    speb = lian_speb(inst.array, inst.bs_positions_m, inst.target_position_m, inst.alpha, W,
                     inst.snapshots, inst.noise_sense_w, model=inst.speb_model)
    power = (W.real**2 + W.imag**2).sum(dim=(-2, -1))
    return {
        "rates_bps_hz": rates,
        "sum_rate_bps_hz": rates.sum(-1),
        "sinr": sinr(inst.H_stacked, Ws, inst.noise_comm_w),
        "speb_m2": speb,
        "power_w": power,
    }


@dataclass(frozen=True)
class CoopBatch:
    r"""A batch of ``coop-localization`` instances that share N, L, K, Ns, the array, snapshots and noise.

    Tensors (batch dimension first): ``H [B, N, L, K]``, ``alpha [B, N, N]`` complex128,
    ``bs_positions_m [B, N, 3]``, ``target_position_m [B, 3]``, ``p_max_w [B, N]``,
    ``speb_max_m2 [B]`` float64. :func:`batch_terms` evaluates the same formulas as
    :func:`objective_terms` on all of them at once (training losses, batched solvers).
    """

    array: UPA
    snapshots: int
    noise_comm_w: float
    noise_sense_w: float
    speb_model: str
    num_sensing_streams: int
    H: torch.Tensor
    alpha: torch.Tensor
    bs_positions_m: torch.Tensor
    target_position_m: torch.Tensor
    p_max_w: torch.Tensor
    speb_max_m2: torch.Tensor

    @classmethod
    def from_instances(cls, instances: Sequence[CoopLocalizationInstance], *, estimates: bool = False) -> CoopBatch:
        """Stack instances; ``estimates=True`` takes ``H_estimate`` / the estimated target where present
        (a solver's view), else the true channels and position (what metrics use)."""
        if not instances:
            raise ValueError("CoopBatch needs at least one instance")
        first = instances[0]
        shared = ("upa_shape", "spacing_wavelengths", "snapshots", "noise_comm_dbm", "noise_sense_dbm",
                  "speb_model", "num_sensing_streams")
        for inst in instances[1:]:
            for key in shared:
                if getattr(inst, key) != getattr(first, key):
                    raise ValueError(f"CoopBatch: instances differ in {key}")
            if inst.H.shape != first.H.shape:
                raise ValueError(f"CoopBatch: instances differ in H shape ({tuple(inst.H.shape)} vs {tuple(first.H.shape)})")
        views = [inst.solver_view() if estimates else (inst.H, inst.target_position_m) for inst in instances]
        return cls(
            array=first.array,
            snapshots=first.snapshots,
            noise_comm_w=first.noise_comm_w,
            noise_sense_w=first.noise_sense_w,
            speb_model=first.speb_model,
            num_sensing_streams=first.num_sensing_streams,
            H=torch.stack([v[0] for v in views]),
            alpha=torch.stack([inst.alpha for inst in instances]),
            bs_positions_m=torch.stack([inst.bs_positions_m for inst in instances]),
            target_position_m=torch.stack([v[1] for v in views]),
            p_max_w=torch.stack([inst.p_max_w for inst in instances]),
            speb_max_m2=torch.tensor([inst.speb_max_m2 for inst in instances], dtype=torch.float64),
        )

    def __len__(self) -> int:
        return int(self.H.shape[0])

    def to(self, device) -> CoopBatch:
        """The same batch with its tensors on ``device``."""
        moved = {k: getattr(self, k).to(device) for k in
                 ("H", "alpha", "bs_positions_m", "target_position_m", "p_max_w", "speb_max_m2")}
        return replace(self, **moved)


def batch_terms(batch: CoopBatch, W: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`objective_terms` for ``W [B, ..., N, L, K+Ns]`` on a :class:`CoopBatch` (same keys, leading ``[B, ...]``).

    Extra dimensions between B and N (e.g. several starting points per instance) broadcast.
    """
    extra = W.dim() - 4
    if extra < 0 or W.shape[0] != len(batch):
        raise ValueError(f"W: expected [B={len(batch)}, ..., N, L, S], got {tuple(W.shape)}")

    def expand(t: torch.Tensor) -> torch.Tensor:  # [B, ...rest] -> [B, 1 (x extra), ...rest]
        return t.reshape(t.shape[0], *([1] * extra), *t.shape[1:])

    Ws = stack_beams(W)
    n, length, k = batch.H.shape[1:]
    Hs = expand(batch.H.reshape(len(batch), n * length, k))
    rates = nats_to_bits(rates_nats(Hs, Ws, batch.noise_comm_w))
    speb = lian_speb(batch.array, expand(batch.bs_positions_m), expand(batch.target_position_m),
                     expand(batch.alpha), W, batch.snapshots, batch.noise_sense_w, model=batch.speb_model)
    power = (W.real**2 + W.imag**2).sum(dim=(-2, -1))
    return {
        "rates_bps_hz": rates,
        "sum_rate_bps_hz": rates.sum(-1),
        "sinr": sinr(Hs, Ws, batch.noise_comm_w),
        "speb_m2": speb,
        "power_w": power,
    }


@register_evaluator(PROBLEM)
def evaluate_coop_localization(inst: CoopLocalizationInstance, solution: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    t = objective_terms(inst, solution["W"])
    power = t["power_w"]
    p_max = inst.p_max_w
    speb = float(t["speb_m2"])
    power_ok = bool((power <= p_max * (1 + POWER_RTOL)).all())
    speb_ok = math.isfinite(speb) and speb <= inst.speb_max_m2 * (1 + SPEB_RTOL)
    sum_rate = float(t["sum_rate_bps_hz"])
    return {
        "sum_rate_bps_hz": sum_rate,
        "rates_bps_hz": t["rates_bps_hz"].tolist(),
        "sinr": t["sinr"].tolist(),
        "speb_m2": speb,
        "speb": speb,
        "speb_max_m2": inst.speb_max_m2,
        "speb_over_gamma": speb / inst.speb_max_m2,
        "power_w": power.tolist(),
        "p_max_w": p_max.tolist(),
        "total_power_w": float(power.sum()),
        "power_feasible": power_ok,
        "speb_feasible": bool(speb_ok),
        "feasible": bool(power_ok and speb_ok),
        "objective": sum_rate,
    }
