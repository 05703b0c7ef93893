r"""Learned solvers of 004 (Zhao et al.) for ``beampattern-sinr``: ``gnn``, ``dnn`` and ``gnn-ip``.

* ``gnn``: the GNN module alone (004 "GNN only", Figs. 10-11), one forward pass of
  :class:`isac.learning.zhao.ZhaoGNN`. Its output always meets :math:`\mathrm{tr}\,\mathbf R = P_0`
  but may violate an SINR constraint; :func:`isac.solvers.base.finalize` then labels it
  INFEASIBLE (that is what the satisfaction-ratio figures count).
* ``gnn-fl`` (ours): the same GNN trunk with a feasibility layer instead of the normalisation (23)
  (:class:`isac.learning.zhao.ZhaoGNNFL`, :func:`isac.learning.zhao.feasible_powers`): the network
  gives beam directions and how to split the spare power; the layer computes the least user powers
  that meet every SINR target for those directions, so the output is feasible whenever the
  directions allow it (INFEASIBLE otherwise, as for ``gnn``).
* ``dnn``: the fully connected benchmark (004 Benchmark 3), :class:`isac.learning.zhao.ZhaoDNN`;
  runs only on its training L and K.
* ``gnn-ip``: 004 Algorithm 1. A model (option ``model``: "auto" = a GNN-FL when one is trained for
  the instance, else the GNN; "gnn" = 004's method as published); if its output is infeasible, the
  implicit projection module (problem (29) + eqs. (30)-(31)), by default with our ADMM solver
  (:func:`isac.solvers.zhao_projection.project_feasible_fast`; ``projection_backend="CLARABEL"`` or
  ``"SCS"`` runs the CVXPY program :func:`isac.solvers.zhao_sdr.project_feasible`).
  ``info["projected"]`` says whether the projection ran and ``info["model"]`` which model ran;
  ``timings`` has ``gnn_s`` (forward pass + feasibility check) and ``projection_s`` (0.0 when not
  used). The GNN's feasibility is the evaluator's test; a GNN-FL output whose layer succeeded
  meets every SINR by construction and is used as it is (``finalize`` re-checks every returned
  point). ``solve_batch`` runs one forward pass (and for the GNN one batched feasibility check)
  for all instances, then projects the infeasible ones one by one; each Result's ``time_s`` is
  its share of the batch plus its own projection.

Which checkpoint: ``checkpoint`` names a file; otherwise a ``*.pt`` file whose config
matches the instance (kind, M, Gamma0 and L -- or ``train_users`` when set, e.g. 2 for the
"scaled GNN" of 004 Fig. 9 run on more users) is taken from the folders of ``models``
(os.pathsep-separated), or when empty from ``$ISAC_MODEL_DIR`` (os.pathsep-separated) and then
the shipped ``isac/learning/weights`` folder, in that order (files sorted by name within a
folder). A model trained on the instance's own fixed target set (004 trains one per set) is
preferred over one trained on random targets; a model trained on another fixed set is never
used. Models are loaded once per (file, mtime) and cached at module level, and each solver
object looks its model up once per (M, L, K, Gamma0, target set), before the timed part of
``solve``: ``time_s`` is inference only.

One instance on the CPU runs through :class:`isac.learning.zhao.CompiledForward` (the same network
compiled with Numba, :mod:`isac.learning.zhao_kernels`; torch's per-operation overhead would
dominate a batch of one); ``solve_batch`` runs the torch module once for the whole batch, on the
caller's torch threads when the batch has 64 instances or more.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from isac.metrics.problems.beampattern_sinr import feasible_batch  # also registers the evaluator finalize() needs
from isac.learning import WEIGHTS_DIR
from isac.learning.zhao import CompiledForward, ZhaoGNN, ZhaoGNNFL
from isac.learning.train import CheckpointError, TrainConfig, load_checkpoint, read_checkpoint, target_steering
from isac.scenario.instances.beampattern_sinr import PROBLEM as BEAMPATTERN_SINR
from isac.scenario.instances.beampattern_sinr import BeampatternSinrInstance
from isac.solvers.base import OptionError, Result, Solver, Status, finalize, one_thread, torch_threads
from isac.solvers.registry import register_solver
from isac.tensors import COMPLEX

MODEL_DIR_ENV = "ISAC_MODEL_DIR"
SINR_DB_MATCH_TOL = 1e-9
"""Gamma0 (dB) of a checkpoint and an instance match when they differ by less than this."""
TARGET_ANGLE_MATCH_TOL_DEG = 1e-6
"""Fixed training target directions match an instance's when each differs by less than this (deg)."""

_MODELS: dict[tuple[str, float, str], tuple[torch.nn.Module, TrainConfig]] = {}
_CONFIGS: dict[tuple[str, float], TrainConfig | None] = {}


def model_folders(models: str = "") -> list[Path]:
    """Folders searched for checkpoints: ``models`` if given, else ``$ISAC_MODEL_DIR`` then the shipped folder."""
    if models:
        return [Path(p) for p in models.split(os.pathsep) if p]
    env = [Path(p) for p in os.environ.get(MODEL_DIR_ENV, "").split(os.pathsep) if p]
    return [*env, WEIGHTS_DIR]


def _config_of(path: Path) -> TrainConfig | None:
    """Config of a checkpoint file (cached by path and mtime); None for an unreadable or foreign file."""
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _CONFIGS:
        try:
            _CONFIGS[key] = read_checkpoint(path)["config_obj"]
        except CheckpointError:
            _CONFIGS[key] = None
    return _CONFIGS[key]


def _angles_match(cfg: TrainConfig, angles_deg: Sequence[float] | None) -> bool:
    """A model trained on fixed targets serves only instances with those targets (as sets, 1e-6 deg)."""
    if cfg.target_angles_deg is None:
        return True
    if angles_deg is None or len(angles_deg) != len(cfg.target_angles_deg):
        return False
    return all(abs(a - b) < TARGET_ANGLE_MATCH_TOL_DEG
               for a, b in zip(sorted(cfg.target_angles_deg), sorted(float(x) for x in angles_deg)))


def find_checkpoint(kind: str, num_antennas: int, num_users: int, sinr_db: float,
                    folders: Sequence[Path], target_angles_deg: Sequence[float] | None = None) -> Path | None:
    """The checkpoint trained with ``kind``, M, L and Gamma0 (dB) that fits the target directions best.

    A model trained on the instance's own fixed target set (``TrainConfig.target_angles_deg``)
    is preferred, searched through every folder in order; otherwise the first model trained on
    random targets. Models trained on another fixed set never match. None if nothing fits.
    """
    generic: Path | None = None
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.pt")):
            cfg = _config_of(path)
            if not (cfg is not None and cfg.kind == kind and cfg.num_antennas == num_antennas
                    and cfg.num_users == num_users and abs(cfg.sinr_db - sinr_db) < SINR_DB_MATCH_TOL
                    and _angles_match(cfg, target_angles_deg)):
                continue
            if cfg.target_angles_deg is not None:
                return path
            if generic is None:
                generic = path
    return generic


def get_model(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """Load (once per file, mtime and device) the model of a checkpoint; :class:`CheckpointError` if unusable."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    key = (str(p.resolve()), p.stat().st_mtime, device)
    if key not in _MODELS:
        model, config = load_checkpoint(p)
        _MODELS[key] = (model.to(device), config)
    return _MODELS[key]


_FAST: dict[int, tuple[torch.nn.Module, CompiledForward]] = {}


def _fast_forward(model: torch.nn.Module) -> CompiledForward | None:
    """The compiled twin of a loaded GNN / GNN-FL (built once per model object); None for other models."""
    if not isinstance(model, ZhaoGNN):
        return None
    hit = _FAST.get(id(model))
    if hit is None or hit[0] is not model:
        hit = (model, CompiledForward(model))
        _FAST[id(model)] = hit
    return hit[1]


_STEERING: dict[tuple, Any] = {}


def _target_steering_np(inst: BeampatternSinrInstance):
    """``[M, K]`` complex128 NumPy target steering vectors, cached per array and target set (fixed sets repeat)."""
    key = (inst.array, tuple(inst.target_angles_deg.tolist()))
    A = _STEERING.get(key)
    if A is None:
        A = inst.array.steering(torch.deg2rad(inst.target_angles_deg)).numpy().T.copy()
        A.setflags(write=False)
        if len(_STEERING) > 256:
            _STEERING.clear()
        _STEERING[key] = A
    return A


def _forward_one(model: torch.nn.Module, inst: BeampatternSinrInstance, device: str):
    """One instance -> ``(C [M, L], S [M, M]`` complex128, feasibility layer valid); NumPy on CPU when possible."""
    fast = _fast_forward(model) if device == "cpu" else None
    if fast is None:
        C, S, valid = _forward(model, [inst], device)
        return C[0], S[0], bool(valid[0])
    A = _target_steering_np(inst)
    C, S, valid = fast(inst.H.numpy(), A, inst.power_w, inst.noise_w, inst.sinr_target)
    return torch.from_numpy(C), torch.from_numpy(S), valid


@torch.no_grad()
def _forward(model: torch.nn.Module, instances: Sequence[BeampatternSinrInstance], device: str):
    """One forward pass over instances sharing M, L and K -> ``C [B, M, L]``, ``S [B, M, M]`` complex128 on CPU
    and ``valid [B]`` (the feasibility layer's flag; all True for a model without one)."""
    H = torch.stack([i.H for i in instances]).to(device)
    first = instances[0]
    if all(i.spacing_wavelengths == first.spacing_wavelengths for i in instances):  # one array: vectorised
        angles = torch.stack([i.target_angles_deg for i in instances])  # [B, K]
        if bool((angles == angles[:1]).all()):  # one fixed target set: steer once
            # moved before expanding: .to() of a broadcast tensor would materialise it on the device
            A = first.array.steering(torch.deg2rad(angles[:1])).transpose(-2, -1).to(device)
            A = A.expand(len(instances), -1, -1)
        else:
            A = first.array.steering(torch.deg2rad(angles)).transpose(-2, -1).to(device)
    else:
        A = torch.stack([target_steering(i) for i in instances]).to(device)
    power = torch.tensor([i.power_w for i in instances], dtype=torch.float64, device=device)
    noise = torch.tensor([i.noise_w for i in instances], dtype=torch.float64, device=device)
    if isinstance(model, ZhaoGNNFL):
        gamma = torch.tensor([i.sinr_target for i in instances], dtype=torch.float64, device=device)
        C, S, valid = model.forward_valid(H, A, power, noise, gamma)
    else:
        C, S = model(H, A, power, noise)
        valid = torch.ones(len(instances), dtype=torch.bool)
    return C.to("cpu", COMPLEX), S.to("cpu", COMPLEX), valid.cpu()


@dataclass
class _ZhaoLearned(Solver):
    checkpoint: str = ""
    """Explicit checkpoint file ("" = look one up, see the module docstring)."""
    models: str = ""
    """Folder(s) of checkpoints to search, os.pathsep-separated ("" = $ISAC_MODEL_DIR, then the shipped weights)."""
    train_users: int = 0
    """L of the model to use (0 = the instance's L); e.g. 2 runs a GNN trained with L = 2 on more users."""
    device: str = "cpu"
    """torch device for the forward pass ("cpu", "cuda", ...)."""

    kind: ClassVar[str] = "gnn"
    problems: ClassVar[tuple[str, ...]] = (BEAMPATTERN_SINR,)

    def __post_init__(self) -> None:
        if self.train_users < 0:
            raise ValueError(f"train_users must be >= 0, got {self.train_users}")
        self._model: torch.nn.Module | None = None
        self._resolved: dict[tuple, tuple[torch.nn.Module, TrainConfig, Path]] = {}

    def model_kinds(self) -> tuple[str, ...]:
        """Model kinds this solver runs, in order of preference."""
        return (self.kind,)

    # --- model resolution (not timed) ---------------------------------------------------------------
    def resolve(self, inst: BeampatternSinrInstance) -> tuple[torch.nn.Module, TrainConfig, Path]:
        """The model this solver uses on ``inst`` (loaded and cached); :class:`OptionError` if there is none.

        Looked up once per solver object and (M, L, K, Gamma0, target set): a sweep does not scan the
        model folders on every instance. A checkpoint written later is seen by a new solver object.
        """
        key = (inst.num_antennas, inst.num_users, inst.num_targets, inst.sinr_db,
               tuple(inst.target_angles_deg.tolist()))
        hit = self._resolved.get(key)
        if hit is None:
            hit = self._resolve(inst)
            if len(self._resolved) > 256:
                self._resolved.clear()
            self._resolved[key] = hit
        return hit

    def _resolve(self, inst: BeampatternSinrInstance) -> tuple[torch.nn.Module, TrainConfig, Path]:
        kinds = self.model_kinds()
        users = self.train_users or inst.num_users
        if self.checkpoint:
            path = Path(self.checkpoint)
        else:
            folders = model_folders(self.models)
            found = None
            for kind in kinds:
                found = find_checkpoint(kind, inst.num_antennas, users, inst.sinr_db, folders,
                                        inst.target_angles_deg.tolist())
                if found is not None:
                    break
            if found is None:
                where = ", ".join(str(f) for f in folders)
                label = f"zhao-{kinds[0]}"
                raise OptionError(
                    f"no trained {' or '.join('zhao-' + k for k in kinds)} for M={inst.num_antennas}, L={users}, "
                    f"Gamma0={inst.sinr_db:g} dB in {where}; train one with `isac train {label} --users {users} "
                    f"--sinr-db {inst.sinr_db:g} --out DIR`")
            path = found
        try:
            model, config = get_model(path, self.device)
        except CheckpointError as e:
            raise OptionError(f"solver {self.name!r}: {e}") from None
        if config.kind not in kinds:
            raise OptionError(f"solver {self.name!r}: {path} holds a zhao-{config.kind}, not a "
                              f"{' or '.join('zhao-' + k for k in kinds)}")
        if config.num_antennas != inst.num_antennas:
            raise OptionError(f"solver {self.name!r}: {path} was trained for M={config.num_antennas} antennas, "
                              f"the instance has M={inst.num_antennas}")
        if not _angles_match(config, inst.target_angles_deg.tolist()):
            raise OptionError(f"solver {self.name!r}: {path} was trained on targets {config.target_angles_deg} deg, "
                              f"the instance has {[round(a, 6) for a in inst.target_angles_deg.tolist()]}")
        if config.kind == "dnn" and (config.num_users, config.num_targets) != (inst.num_users, inst.num_targets):
            raise OptionError(f"solver {self.name!r}: {path} was trained for L={config.num_users}, "
                              f"K={config.num_targets}; the instance has L={inst.num_users}, K={inst.num_targets} "
                              "(a DNN only runs on its training L and K)")
        if config.kind == "gnn-fl" and abs(config.sinr_db - inst.sinr_db) >= SINR_DB_MATCH_TOL:
            raise OptionError(f"solver {self.name!r}: {path} enforces Gamma0 = {config.sinr_db:g} dB in its "
                              f"feasibility layer, the instance has {inst.sinr_db:g} dB")
        return model, config, path

    def solve(self, instance) -> Result:
        if instance.problem not in self.problems:
            return super().solve(instance)  # raises the base class's OptionError
        self._model, config, _ = self.resolve(instance)  # one-time loading stays out of time_s
        _fast_forward(self._model)  # so is building (and compiling) the twin
        self._kind_used = config.kind
        return super().solve(instance)

    def _solve(self, inst: BeampatternSinrInstance):
        assert self._model is not None
        C, S, _ = _forward_one(self._model, inst, self.device)
        return Status.CONVERGED, f"{self._kind_used.upper()} forward pass", {"C": C, "S": S}, [], 1

    def solve_batch(self, instances: Sequence[BeampatternSinrInstance]) -> list[Result]:
        """Solve many instances with ONE forward pass; each Result's ``time_s`` is the batch time / B.

        The instances must share M, L and K (P0 and sigma^2 may differ); the model is resolved
        from the first one.
        """
        insts = list(instances)
        if not insts:
            return []
        C, S, _, per, kind = self._forward_batch(insts)
        out = []
        with one_thread():
            for b, inst in enumerate(insts):
                res = Result(problem=BEAMPATTERN_SINR, solver=self.name, status=Status.CONVERGED,
                             message=f"{kind.upper()} forward pass (batch of {len(insts)})",
                             solution={"C": C[b], "S": S[b]}, iterations=1, time_s=per,
                             timings={"solve_s": per}, options=self.options(), seed=None)
                out.append(finalize(res, inst))
        return out

    solve_batch._one_thread = True  # type: ignore[attr-defined]  # threads set here: see _forward_batch

    def _forward_batch(self, insts: list[BeampatternSinrInstance]):
        """Validate a non-empty batch, resolve the model, one timed forward pass
        -> (C, S, valid, seconds per instance, model kind)."""
        first = insts[0]
        if any(i.problem != BEAMPATTERN_SINR for i in insts):
            raise OptionError(f"solver {self.name!r} solves only {BEAMPATTERN_SINR}")
        shape = (first.num_antennas, first.num_users, first.num_targets)
        if any((i.num_antennas, i.num_users, i.num_targets) != shape for i in insts):
            raise OptionError("solve_batch: every instance must have the same M, L and K")
        model, config, path = self.resolve(first)
        if any(not _angles_match(config, i.target_angles_deg.tolist()) for i in insts):
            raise OptionError(f"solve_batch: {path} was trained on targets {config.target_angles_deg} deg; "
                              "every instance of the batch must have them")
        if config.kind == "gnn-fl" and any(abs(i.sinr_db - config.sinr_db) >= SINR_DB_MATCH_TOL for i in insts):
            raise OptionError(f"solve_batch: {path} enforces Gamma0 = {config.sinr_db:g} dB; every instance of "
                              "the batch must have it")
        # a large batch runs on the caller's torch threads (the forward pass is a few big matrix
        # products), a small one on one thread
        t0 = time.perf_counter()
        with torch_threads(1) if self.device == "cpu" and len(insts) < 64 else contextlib.nullcontext():
            C, S, valid = _forward(model, insts, self.device)
        return C, S, valid, (time.perf_counter() - t0) / len(insts), config.kind

    def options(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "models": self.models, "train_users": self.train_users,
                "device": self.device}


@register_solver
@dataclass
class ZhaoGnn(_ZhaoLearned):
    """GNN module of 004 only (no projection); infeasible outputs are reported INFEASIBLE."""

    name: ClassVar[str] = "gnn"
    kind: ClassVar[str] = "gnn"
    description: ClassVar[str] = "004 GNN module only (one forward pass of a trained model, no projection)"


@register_solver
@dataclass
class ZhaoGnnFl(_ZhaoLearned):
    """The 004 GNN with our feasibility layer (:class:`isac.learning.zhao.ZhaoGNNFL`), no projection."""

    name: ClassVar[str] = "gnn-fl"
    kind: ClassVar[str] = "gnn-fl"
    description: ClassVar[str] = ("GNN of 004 + feasibility layer (ours): least beam powers meeting every SINR for the "
                                  "learned directions, the rest split by the network; no projection")


@register_solver
@dataclass
class ZhaoDnn(_ZhaoLearned):
    """DNN benchmark of 004 (Benchmark 3); fixed L and K."""

    name: ClassVar[str] = "dnn"
    kind: ClassVar[str] = "dnn"
    description: ClassVar[str] = "004 DNN benchmark (4 fully connected layers, one forward pass; fixed L, K)"


GNN_IP_MODELS = ("auto", "gnn", "gnn-fl")


@register_solver
@dataclass
class ZhaoGnnIp(_ZhaoLearned):
    """004 Algorithm 1: a learned model, then the implicit projection module when its output is infeasible.

    ``model``: "gnn" is 004's GNN-IP as published; "gnn-fl" runs the GNN with our feasibility layer
    (:class:`isac.learning.zhao.ZhaoGNNFL`) instead; "auto" (default) takes a GNN-FL when one is trained
    for the instance and the GNN otherwise. ``info["model"]`` says which ran.
    """

    model: str = "auto"
    """Model to run before the projection: "auto" (GNN-FL if available, else GNN), "gnn" (004's) or "gnn-fl"."""
    projection_backend: str = "ours"
    """Solver of the projection (29): "ours" (:mod:`isac.solvers.zhao_projection`), "CLARABEL" or "SCS" (CVXPY)."""

    name: ClassVar[str] = "gnn-ip"
    kind: ClassVar[str] = "gnn"
    description: ClassVar[str] = ("004 GNN-IP: GNN module (+ our feasibility layer when trained: model=auto) and the "
                                  "implicit projection (problem (29), eqs. (30)-(31)) if infeasible")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model not in GNN_IP_MODELS:
            raise ValueError(f"model must be one of {', '.join(GNN_IP_MODELS)}, got {self.model!r}")
        if self.projection_backend not in PROJECTION_BACKENDS:
            raise ValueError(f"projection_backend must be one of {', '.join(PROJECTION_BACKENDS)}, "
                             f"got {self.projection_backend!r}")

    def model_kinds(self) -> tuple[str, ...]:
        return {"auto": ("gnn-fl", "gnn"), "gnn": ("gnn",), "gnn-fl": ("gnn-fl",)}[self.model]

    def _solve(self, inst: BeampatternSinrInstance):
        assert self._model is not None
        t0 = time.perf_counter()
        C, S, valid = _forward_one(self._model, inst, self.device)
        # A valid feasibility-layer output meets every SINR by construction (finalize re-checks it);
        # a plain GNN output goes through the evaluator's test.
        feasible = valid if self._kind_used == "gnn-fl" else bool(feasible_batch([inst], C[None], S[None])[0])
        self.record(timings={"gnn_s": time.perf_counter() - t0, "projection_s": 0.0},
                    info={"projected": not feasible, "model": self._kind_used})
        if feasible:
            return Status.CONVERGED, f"{self._kind_used.upper()} output feasible, projection not used", {"C": C, "S": S}, [], 1
        t1 = time.perf_counter()
        status, message, C_t, S_t = _project(inst, C, S, self.projection_backend)
        self.record(timings={"projection_s": time.perf_counter() - t1})
        return status, message, {"C": C_t, "S": S_t}, [], 1

    def solve_batch(self, instances: Sequence[BeampatternSinrInstance]) -> list[Result]:
        """One forward pass and one feasibility check for all instances, then 004's projection
        for each infeasible output. ``time_s`` = batch time / B + the instance's own projection time."""
        insts = list(instances)
        if not insts:
            return []
        C, S, valid, per, kind = self._forward_batch(insts)
        with one_thread():
            return self._finish_batch(insts, C, S, valid, per, kind)

    solve_batch._one_thread = True  # type: ignore[attr-defined]  # threads set here: see _forward_batch

    def _finish_batch(self, insts, C, S, valid, per, kind) -> list[Result]:
        t0 = time.perf_counter()
        # as in _solve: a valid feasibility-layer output is feasible by construction (finalize re-checks it)
        ok = valid.tolist() if kind == "gnn-fl" else feasible_batch(insts, C, S).tolist()
        share = per + (time.perf_counter() - t0) / len(insts)
        out = []
        for b, (inst, feasible) in enumerate(zip(insts, ok)):
            info = {"projected": not feasible, "model": kind}
            if feasible:
                status, message, sol, proj_s = (Status.CONVERGED, f"{kind.upper()} output feasible, projection not used",
                                                {"C": C[b], "S": S[b]}, 0.0)
            else:
                t1 = time.perf_counter()
                status, message, C_t, S_t = _project(inst, C[b], S[b], self.projection_backend)
                proj_s = time.perf_counter() - t1
                sol = {"C": C_t, "S": S_t}
            res = Result(problem=BEAMPATTERN_SINR, solver=self.name, status=status,
                         message=f"{message} (batch of {len(insts)})", solution=sol, iterations=1,
                         time_s=share + proj_s, timings={"solve_s": share + proj_s, "gnn_s": share,
                                                         "projection_s": proj_s},
                         options=self.options(), seed=None, info=info)
            out.append(finalize(res, inst))
        return out

    def options(self) -> dict[str, Any]:
        return {**super().options(), "model": self.model, "projection_backend": self.projection_backend}


PROJECTION_BACKENDS = ("ours", "CLARABEL", "SCS")


def _project(inst: BeampatternSinrInstance, C: torch.Tensor, S: torch.Tensor, backend: str = "ours"):
    """004's projection module on one infeasible output -> (status, message, C, S)."""
    if backend == "ours":
        from isac.solvers.zhao_projection import project_feasible_fast as project
        C_t, S_t, status, message = project(inst, C, S)
    else:
        from isac.solvers.zhao_sdr import project_feasible  # lazy: CVXPY only when needed

        C_t, S_t, status, message = project_feasible(inst, C, S, backend=backend)
    return status, f"output infeasible, projected: {message}", C_t, S_t
