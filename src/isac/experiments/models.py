"""Trained models a reproduction needs: found from its specs, trained once, reused.

A spec that runs a learned solver (``gnn``, ``dnn``, ``gnn-ip`` of ``beampattern-sinr``)
needs, at each grid point, a model trained for that point's setting: 004 retrains its GNN
for every SINR target and every number of users (Sec. IV-C), except the "scaled" GNN of
Fig. 9, which is trained with L = 2 (solver option ``train_users``) and run on larger L.
:func:`required_models` reads that requirement off the specs (drawing one instance per
point to learn its M, L, K and Gamma0), and :func:`ensure_models` trains what is missing
into one folder. The learned solvers look for checkpoints in the folders listed in the
environment variable ``ISAC_MODEL_DIR`` (then in the shipped weights), so
:func:`use_model_dir` makes the folder visible to them and to worker processes started
afterwards.

Full mode uses the paper's training sizes on a fixed target set and
:data:`isac.learning.train.RANDOM_TARGET_SIZES` (more samples, fewer epochs) on random targets.
Quick mode trains small models (:data:`QUICK_TRAINING`): the numbers then show that the
pipeline works, not the paper's performance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from isac.experiments.spec import SweepSpec
from isac.solvers.zhao_learned import MODEL_DIR_ENV

LEARNED = {"gnn": "gnn", "gnn-ip": "gnn-fl", "gnn-fl": "gnn-fl", "dnn": "dnn"}
"""Learned ``beampattern-sinr`` solvers and the model kind each one runs (``gnn-ip``: with its default
``model = "auto"``; ``model = "gnn"`` runs 004's GNN, see :func:`model_kind`)."""


def model_kind(solver: str, options) -> str:
    """The model kind a learned solver with these options needs."""
    if solver == "gnn-ip" and options.get("model", "auto") == "gnn":
        return "gnn"
    return LEARNED[solver]

QUICK_TRAINING = {"epochs": 20, "n_train": 2000, "n_val": 200, "n_test": 200}
"""Training-size overrides in quick mode (full mode uses the paper's settings)."""



@dataclass(frozen=True, order=True)
class ModelNeed:
    """One model to have: kind ("gnn" | "gnn-fl" | "dnn") trained for this setting.

    ``target_angles_deg`` is the fixed target set of the spec's preset (004 trains one model per
    set), or ``()`` when the preset draws targets per instance.
    """

    kind: str
    num_antennas: int
    num_users: int
    num_targets: int
    sinr_db: float
    target_angles_deg: tuple[float, ...] = ()

    def file_name(self) -> str:
        from isac.learning.train import target_set_tag

        return (f"zhao-{self.kind}-M{self.num_antennas}-L{self.num_users}-K{self.num_targets}-{self.sinr_db:g}dB"
                f"{target_set_tag(self.target_angles_deg)}.pt")


def required_models(specs: Iterable[SweepSpec]) -> list[ModelNeed]:
    """Every (kind, M, L, K, Gamma0, fixed target set) a learned solver of these specs will ask for.

    A preset has a fixed target set when two instances drawn from different seeds at the same
    point have the same target directions (``zhao-fixed-a`` and ``-b``); random directions never
    repeat.
    """
    from isac.scenario.problems import make_preset

    needs: set[ModelNeed] = set()
    for spec in specs:
        if spec.problem != "beampattern-sinr":
            continue
        learned = [s for s in spec.solvers if s.name in LEARNED]
        if not learned:
            continue
        for point in spec.points():
            kwargs = spec.preset_kwargs(point)
            inst = make_preset(spec.problem, spec.preset, spec.seed, **kwargs)
            other = make_preset(spec.problem, spec.preset, spec.seed + 1, **kwargs)
            angles = inst.target_angles_deg.tolist()
            fixed = tuple(angles) if angles == other.target_angles_deg.tolist() else ()
            for s in learned:
                if not s.runs_at(point) or s.options.get("checkpoint"):
                    continue
                users = int(s.options.get("train_users", 0) or 0) or inst.num_users
                needs.add(ModelNeed(model_kind(s.name, s.options), inst.num_antennas, users, inst.num_targets, float(inst.sinr_db),
                                    fixed))
    return sorted(needs)


def ensure_models(needs: Iterable[ModelNeed], folder: str | Path, mode: str, *, seed: int = 0, workers: int = 1,
                  echo: Callable[[str], None] = print) -> list[Path]:
    """Train each needed model into ``folder`` unless a checkpoint with the same config is there.

    Every model trains on one torch thread (``TrainConfig.threads = 1``), so its weights do not
    depend on ``workers``: with ``workers > 1`` the missing models train in that many spawned
    processes at once.
    """
    from isac.learning.train import TrainConfig, default_sizes, read_checkpoint, train

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths, todo = [], []
    for need in needs:
        cfg = TrainConfig(kind=need.kind, num_antennas=need.num_antennas, num_users=need.num_users,
                          num_targets=need.num_targets, sinr_db=need.sinr_db, seed=seed,
                          target_angles_deg=list(need.target_angles_deg) or None, lr_schedule="cosine",
                          threads=1, **default_sizes(need.target_angles_deg, need.kind))
        if mode == "quick":
            cfg = replace(cfg, **QUICK_TRAINING)
        path = out / need.file_name()
        paths.append(path)
        if path.exists():
            try:
                if read_checkpoint(path)["config_obj"] == cfg:
                    continue
            except ValueError:
                pass  # unreadable or foreign: train it again
        todo.append((cfg, path))
    if workers <= 1 or len(todo) <= 1:
        for cfg, path in todo:
            echo(f"training {path.name} ({cfg.epochs} epochs, {cfg.n_train} samples)")
            train(cfg, path, echo=lambda _m: None)
        return paths
    from concurrent.futures import as_completed

    from isac.experiments.runner import single_threaded_pool

    echo(f"training {len(todo)} models in {min(workers, len(todo))} processes")
    with single_threaded_pool(min(workers, len(todo))) as pool:
        futures = {pool.submit(_train_one, cfg, str(path)): path for cfg, path in todo}
        for f in as_completed(futures):
            f.result()
            echo(f"trained {futures[f].name}")
    return paths


def _train_one(cfg, path: str) -> str:
    """Worker task of :func:`ensure_models` (module level, so spawned processes can import it)."""
    from isac.learning.train import train

    train(cfg, Path(path), echo=lambda _m: None)
    return path


def use_model_dir(folder: str | Path) -> None:
    """Put ``folder`` first in ``ISAC_MODEL_DIR`` for this process and the workers it starts."""
    entries = [str(Path(folder).resolve())]
    entries += [e for e in os.environ.get(MODEL_DIR_ENV, "").split(os.pathsep) if e and e not in entries]
    os.environ[MODEL_DIR_ENV] = os.pathsep.join(entries)
