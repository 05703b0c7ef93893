r"""Learned solvers of 002 (Lian et al.) for ``coop-localization``: ``lhgnn``, ``lhgnn-noatt``, ``homognn``, ``cnn``,
and ours, ``lhgnn-rzf`` (the LHGNN with a regularised-zero-forcing output layer).

Each is one forward pass of a trained network (:mod:`isac.learning.lian`): the LHGNN with graph
attention, the LHGNN without attention (Sec. IV-D), the homogeneous GNN and the naive CNN
(Benchmarks 2-3). The networks see the solver's view (``inst.solver_view()``: the CSI estimate and the
estimated target when the instance has them); the beams meet every per-BS budget by construction
(eq. (50)) while the SPEB constraint is only learned, so an output can violate it:
:func:`isac.solvers.base.finalize` then reports INFEASIBLE (the point is still returned). A feasible
output is CONVERGED.

Which checkpoint: ``checkpoint`` names a file. Otherwise the ``*.pt`` files of the solver's kind in
the folders of ``models`` (os.pathsep-separated) -- when empty, ``$ISAC_MODEL_DIR`` then the shipped
``isac/learning/weights`` -- are ranked against the instance by (power difference in dB, clean/robust
inputs mismatch, ``|log10|`` of the gamma/floor ratio difference), the first folder winning ties: a model
trained for the instance's power, gamma / SPEB floor and kind of inputs (robust when the instance
carries estimates) if there is one, the nearest otherwise, with ``info["checkpoint_note"]`` saying how
it differs. ``info`` also has ``checkpoint`` (file name), ``model`` (kind, protocol, power, gamma/floor,
robust) and ``parameters`` (number of weights). Models are loaded once per (file, mtime, device) and
cached; loading and the floor look-up (for gamma/floor; one cached SDP per geometry) are not timed.

``solve_batch`` runs ONE forward pass for all instances (same N, L, K); each Result's ``time_s`` is the
batch time / B.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

import isac.metrics.problems.coop_localization  # noqa: F401  (registers the evaluator finalize() needs)
from isac.learning.lian_train import LianTrainConfig, load_checkpoint, read_checkpoint, steering_inputs
from isac.learning.train import CheckpointError
from isac.metrics.bounds.lian import lian_speb_function
from isac.metrics.problems.coop_localization import CoopBatch
from isac.scenario.instances.coop_localization import PROBLEM, CoopLocalizationInstance
from isac.solvers.base import OptionError, Result, Solver, Status, finalize
from isac.solvers.registry import register_solver
from isac.solvers.zhao_learned import model_folders
from isac.tensors import COMPLEX

MATCH_TOL = 1e-6
"""Power (dB) and log10(gamma/floor) of a checkpoint and an instance match when they differ by less than this."""

_MODELS: dict[tuple[str, float, str], tuple[torch.nn.Module, LianTrainConfig]] = {}
_CONFIGS: dict[tuple[str, float], LianTrainConfig | None] = {}


def _config_of(path: Path) -> LianTrainConfig | None:
    """Config of a checkpoint file (cached by path and mtime); None for an unreadable or foreign file."""
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _CONFIGS:
        try:
            _CONFIGS[key] = read_checkpoint(path)["config_obj"]
        except CheckpointError:
            _CONFIGS[key] = None
    return _CONFIGS[key]


def get_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, LianTrainConfig]:
    """Load (once per file, mtime and device) the model of a checkpoint; :class:`CheckpointError` if unusable."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    key = (str(p.resolve()), p.stat().st_mtime, device)
    if key not in _MODELS:
        model, config, _ = load_checkpoint(p, device)
        _MODELS[key] = (model, config)
    return _MODELS[key]


@dataclass(frozen=True)
class Setting:
    """What a checkpoint is matched on: per-BS power (dBm), gamma / SPEB floor, estimates in the inputs."""

    power_dbm: float
    gamma_over_floor: float
    robust: bool

    @classmethod
    def of_instance(cls, inst: CoopLocalizationInstance) -> Setting:
        from isac.metrics.bounds.lian_floor import speb_floor_m2

        floor = speb_floor_m2(inst)
        ratio = inst.speb_max_m2 / floor if floor > 0 and math.isfinite(floor) else math.inf
        robust = inst.H_estimate is not None or inst.target_position_estimate_m is not None
        return cls(float(sum(inst.p_max_dbm) / len(inst.p_max_dbm)), float(ratio), robust)

    @classmethod
    def of_config(cls, cfg: LianTrainConfig) -> Setting:
        return cls(float(cfg.power_dbm), float(cfg.gamma_over_floor), cfg.robust)

    def distance(self, other: Setting) -> tuple[float, int, float]:
        dp = abs(self.power_dbm - other.power_dbm)
        dg = abs(math.log10(self.gamma_over_floor) - math.log10(other.gamma_over_floor)) \
            if self.gamma_over_floor > 0 and other.gamma_over_floor > 0 and math.isfinite(self.gamma_over_floor) \
            and math.isfinite(other.gamma_over_floor) else math.inf
        return (0.0 if dp < MATCH_TOL else dp, int(self.robust != other.robust), 0.0 if dg < MATCH_TOL else dg)

    def describe(self) -> str:
        return (f"{self.power_dbm:g} dBm, gamma = {self.gamma_over_floor:.4g} x floor, "
                f"{'robust (estimated) inputs' if self.robust else 'exact inputs'}")


def find_checkpoint(kind: str, setting: Setting, folders: Sequence[Path]) -> tuple[Path, Setting] | None:
    """The checkpoint of ``kind`` nearest to ``setting`` (module docstring), or None if there is none."""
    best: tuple[tuple[float, int, float], Path, Setting] | None = None
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.pt")):
            cfg = _config_of(path)
            if cfg is None or cfg.kind != kind:
                continue
            s = Setting.of_config(cfg)
            d = setting.distance(s)
            if best is None or d < best[0]:
                best = (d, path, s)
    return None if best is None else (best[1], best[2])


def _inputs(instances: Sequence[CoopLocalizationInstance], device: str) -> tuple[CoopBatch, tuple[torch.Tensor, ...]]:
    """The solver's view of instances sharing N, L, K and the network inputs ``(H, A, p_max_w, noise_w)`` on ``device``."""
    view = CoopBatch.from_instances(list(instances), estimates=True)
    noise = torch.tensor([i.noise_comm_w for i in instances], dtype=torch.float64)
    return view, (view.H.to(device), steering_inputs(view).to(device), view.p_max_w.to(device), noise.to(device))


@torch.no_grad()
def _forward(model: torch.nn.Module, instances: Sequence[CoopLocalizationInstance], device: str) -> torch.Tensor:
    """One forward pass over instances sharing N, L, K -> ``W [B, N, L, K+1]`` complex128 on the CPU."""
    return model(*_inputs(instances, device)[1]).to("cpu", COMPLEX)


GUARD_STEPS = 7
"""Bisection steps of the ``lhgnn-rzf`` SPEB guard (t to 2^-7 of its bracket)."""
GUARD_BRACKETS = (1.0, 1.5, 2.0, 3.0)
"""Upper ends tried, in order, until the guard finds one whose beams meet gamma."""
GUARD_RTOL = 1e-3
"""The guard aims at SPEB <= gamma (1 - GUARD_RTOL) on the solver's view."""


@torch.no_grad()
def _guarded_forward(model, instances: Sequence[CoopLocalizationInstance], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``lhgnn-rzf`` with its SPEB guard -> ``(W [B, N, L, K+1], t [B])``.

    The network's correction to regularised zero forcing is scaled by t per instance
    (:meth:`isac.learning.lian.LHGNNRZF.beams_at`): the rate falls and the SPEB falls as t grows from 0
    (measured; the SPEB is not monotone far beyond t = 1). The guard takes the first t_hi of
    :data:`GUARD_BRACKETS` whose beams meet :math:`\gamma(1-10^{-3})` on the solver's view (CSI estimate,
    estimated target) and bisects [0, t_hi] for the least such t, keeping at every step the end that
    meets it, so the returned beams always meet it there. On an instance with estimates (CSI or target)
    the search is over [1, t_hi] instead: the view's SPEB is not the true one, and lowering t would spend
    the margin the robust models were trained with (measured: 35 % of the robust model's outputs then
    missed gamma on the true target). With no such t_hi the plain output (t = 1) is
    returned and reported INFEASIBLE when it misses gamma. One GNN pass; each step re-runs only the
    output layer and the SPEB (batched)."""
    view, inputs = _inputs(instances, device)
    prepared = model.prepare(*inputs)
    b = len(instances)
    speb_of = lian_speb_function(view.array, view.bs_positions_m, view.target_position_m, view.alpha,
                                 view.snapshots, view.noise_sense_w, model=view.speb_model)
    limit = view.speb_max_m2 * (1.0 - GUARD_RTOL)

    def meets(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        W = model.beams_at(prepared, t.to(device)).to("cpu", COMPLEX)
        speb = speb_of(W)
        return W, torch.isfinite(speb) & (speb <= limit)

    one = torch.ones(b, dtype=torch.float64)
    hi = torch.full_like(one, float("nan"))
    W_hi = None
    for t_hi in GUARD_BRACKETS:
        todo = torch.isnan(hi)
        if not bool(todo.any()):
            break
        W, ok = meets(one * t_hi)
        if W_hi is None:
            W_hi = W  # the plain output (t = 1) where no bracket meets gamma
        hi = torch.where(todo & ok, one * t_hi, hi)
        W_hi = torch.where((todo & ok)[:, None, None, None], W, W_hi)
    found = ~torch.isnan(hi)
    hi = torch.where(found, hi, one)
    # with estimated inputs the network's trained SPEB margin is what covers the estimation error: the guard
    # may raise t (the view says gamma is missed) but never lowers it below 1
    estimated = torch.tensor([inst.H_estimate is not None or inst.target_position_estimate_m is not None
                              for inst in instances])
    lo = torch.where(estimated, torch.minimum(one, hi), torch.zeros_like(one))
    for _ in range(GUARD_STEPS):
        if not bool((found & (lo < hi)).any()):
            break
        mid = 0.5 * (lo + hi)
        W, ok = meets(mid)
        ok = ok & found & (lo < hi)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
        W_hi = torch.where(ok[:, None, None, None], W, W_hi)
    return W_hi, hi


@dataclass
class _LianLearned(Solver):
    checkpoint: str = ""
    """Explicit checkpoint file ("" = the shipped/found one nearest to the instance, see the module docstring)."""
    models: str = ""
    """Folder(s) of checkpoints to search, os.pathsep-separated ("" = $ISAC_MODEL_DIR, then the shipped weights)."""
    device: str = "cpu"
    """torch device for the forward pass ("cpu", "cuda", ...)."""

    kind: ClassVar[str] = "lhgnn"
    problems: ClassVar[tuple[str, ...]] = (PROBLEM,)

    def __post_init__(self) -> None:
        self._model: torch.nn.Module | None = None
        self._info: dict[str, Any] = {}

    def resolve(self, inst: CoopLocalizationInstance) -> tuple[torch.nn.Module, LianTrainConfig, dict[str, Any]]:
        """The model used on ``inst`` (loaded, cached) and the ``info`` facts about it; :class:`OptionError` if none."""
        if inst.num_sensing_streams != 1:
            raise OptionError(f"solver {self.name!r}: the 002 networks design one sensing beam (one target); "
                              f"the instance has {inst.num_sensing_streams} sensing streams")
        note = ""
        if self.checkpoint:
            path = Path(self.checkpoint)
        else:
            setting = Setting.of_instance(inst)
            folders = model_folders(self.models)
            found = find_checkpoint(self.kind, setting, folders)
            if found is None:
                where = ", ".join(str(f) for f in folders)
                raise OptionError(f"no trained {self.kind} model in {where}; train one with "
                                  f"`isac train lian-{self.kind} --power-dbm {setting.power_dbm:g} --out DIR/FILE.pt`")
            path, trained = found
            if setting.distance(trained) != (0.0, 0, 0.0):
                note = f"no checkpoint for the instance ({setting.describe()}); nearest: {trained.describe()}"
        try:
            model, config = get_model(path, self.device)
        except CheckpointError as e:
            raise OptionError(f"solver {self.name!r}: {e}") from None
        if config.kind != self.kind:
            raise OptionError(f"solver {self.name!r}: {path} holds a {config.kind} model, not a {self.kind}")
        if model.num_antennas != inst.num_antennas:
            raise OptionError(f"solver {self.name!r}: {path} was trained for L={model.num_antennas} antennas per BS, "
                              f"the instance has L={inst.num_antennas}")
        if self.kind == "cnn" and model.shape != (inst.num_bs, inst.num_users, 1):
            n, k, _ = model.shape
            raise OptionError(f"solver {self.name!r}: {path} was trained for N={n}, K={k}; the instance has "
                              f"N={inst.num_bs}, K={inst.num_users} (a CNN only runs on its training sizes)")
        info: dict[str, Any] = {
            "checkpoint": path.name,
            "model": {"kind": config.kind, "protocol": config.protocol, "power_dbm": config.power_dbm,
                      "gamma_over_floor": config.gamma_over_floor, "robust": config.robust,
                      "csi_snr_db": config.csi_snr_db, "position_error_m": config.position_error_m},
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        if note:
            info["checkpoint_note"] = note
        return model, config, info

    def solve(self, instance) -> Result:
        if instance.problem not in self.problems:
            return super().solve(instance)  # raises the base class's OptionError
        self._model, _, self._info = self.resolve(instance)  # one-time loading stays out of time_s
        return super().solve(instance)

    def _beams(self, model: torch.nn.Module, insts: Sequence[CoopLocalizationInstance]) -> tuple[torch.Tensor, list[dict]]:
        """Beams ``W [B, N, L, K+1]`` for ``insts`` and per-instance extra ``info`` (none here: one forward pass)."""
        return _forward(model, insts, self.device), [{} for _ in insts]

    def _solve(self, inst: CoopLocalizationInstance):
        assert self._model is not None
        W, extra = self._beams(self._model, [inst])
        self.record(info={**self._info, **extra[0]})
        return Status.CONVERGED, f"{self.kind} forward pass", {"W": W[0]}, [], 1

    def solve_batch(self, instances: Sequence[CoopLocalizationInstance]) -> list[Result]:
        """Solve many instances with ONE forward pass; each Result's ``time_s`` is the batch time / B.

        The instances must share N, L, K (and what :class:`CoopBatch` needs); the model is resolved from
        the first one."""
        insts = list(instances)
        if not insts:
            return []
        first = insts[0]
        for i, inst in enumerate(insts):
            if inst.problem != PROBLEM:
                raise OptionError(f"solver {self.name!r} solves only {PROBLEM}; instance {i} is {inst.problem!r}")
        model, _, info = self.resolve(first)
        try:
            t0 = time.perf_counter()
            W, extra = self._beams(model, insts)
            per = (time.perf_counter() - t0) / len(insts)
        except ValueError as e:  # CoopBatch: instances differ in N, L, K, the array, noise, ...
            raise OptionError(f"solve_batch: {e}") from None
        out = []
        for b, inst in enumerate(insts):
            res = Result(problem=PROBLEM, solver=self.name, status=Status.CONVERGED,
                         message=f"{self.kind} forward pass (batch of {len(insts)})", solution={"W": W[b]},
                         iterations=1, time_s=per, timings={"solve_s": per}, options=self.options(), seed=None,
                         info={**info, **extra[b]})
            out.append(finalize(res, inst))
        return out

    def options(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "models": self.models, "device": self.device}


@register_solver
@dataclass
class LianLhgnn(_LianLearned):
    """002's attention-enhanced LHGNN (one forward pass)."""

    name: ClassVar[str] = "lhgnn"
    kind: ClassVar[str] = "lhgnn"
    description: ClassVar[str] = "002 LHGNN with graph attention (one forward pass of a trained model)"


@register_solver
@dataclass
class LianLhgnnNoAtt(_LianLearned):
    """002's LHGNN without attention (plain neighbour means, Sec. IV-D)."""

    name: ClassVar[str] = "lhgnn-noatt"
    kind: ClassVar[str] = "lhgnn-noatt"
    description: ClassVar[str] = "002 LHGNN w/o attention (one forward pass of a trained model)"


@register_solver
@dataclass
class LianHomoGnn(_LianLearned):
    """002 Benchmark 2: homogeneous GNN with attention."""

    name: ClassVar[str] = "homognn"
    kind: ClassVar[str] = "homognn"
    description: ClassVar[str] = "002 Homo GNN benchmark (one node and edge type, attention; one forward pass)"


@register_solver
@dataclass
class LianCnn(_LianLearned):
    """002 Benchmark 3: naive CNN (fixed N, K)."""

    name: ClassVar[str] = "cnn"
    kind: ClassVar[str] = "cnn"
    description: ClassVar[str] = "002 naive CNN benchmark (conv + FC layers, one forward pass; fixed N, K)"


@register_solver
@dataclass
class LianLhgnnRzf(_LianLearned):
    """The LHGNN with a model-based output layer (ours, :class:`isac.learning.lian.LHGNNRZF`)."""

    guard: bool = True
    """SPEB guard: scale the network's correction to RZF per instance to the least that meets gamma on the
    solver's view (:func:`_guarded_forward`; ``info["guard_t"]``). False: the plain forward pass (t = 1)."""

    name: ClassVar[str] = "lhgnn-rzf"
    kind: ClassVar[str] = "lhgnn-rzf"
    description: ClassVar[str] = ("LHGNN + regularised zero-forcing output layer and SPEB guard (ours; one GNN pass, "
                                  "meets the per-BS budgets by construction)")

    def _beams(self, model, insts):
        if not self.guard:
            return super()._beams(model, insts)
        W, t = _guarded_forward(model, insts, self.device)
        return W, [{"guard_t": float(x)} for x in t]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "guard": self.guard}
