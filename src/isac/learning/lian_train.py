r"""Training data, loss, training loop and checkpoints for the 002 (Lian et al.) learned beamformers.

Samples are ``lian`` preset instances (:func:`isac.scenario.instances.coop_localization.lian_preset`:
N = 3 BSs with 4x4 UPAs, K = 5 users, one target, P_n = ``power_dbm``), :math:`\gamma` =
``gamma_over_floor`` x the SPEB floor, always taken from ``inst.speb_max_m2``. In the preset the BSs
and the target are fixed and the draws differ in the users (positions, channels) and a common
phase of the reflection coefficients, so :math:`\gamma` is the same for every sample at one power.
**One model per (P, gamma/floor)**: neither is a network input (002 trains per setting; P and
:math:`\gamma` would be constant inputs within a training set). The loss and the scores use the true
channels and target (:class:`isac.metrics.problems.coop_localization.CoopBatch`, ``estimates=False``);
the network inputs are the solver's view (``estimates=True``: ``H_estimate`` and the estimated target
where present).

**Robust training** (Sec. IV-D): ``csi_snr_db`` and ``position_error_m`` add estimation errors to the
inputs only. ``csi_snr_db = [s]`` is a fixed CSI SNR; ``[lo, hi]`` draws one integer SNR per sample
uniformly from lo..hi dB (inclusive); ``position_error_m = [a, b]`` draws
:math:`|\Delta t_i|\sim U[a,b)` per axis with a random sign (the preset's model). The shipped robust
models use SNR U{0..30} dB and errors [0, 7) m, covering the ranges of Fig. 9 (SNR 0-30 dB at
[2, 3) m) and Fig. 10 (errors up to [6, 7) m at 20 dB).

**Loss** (51), per sample, averaged over the mini-batch (:func:`lian_loss`)::

    -sum_k R_k  +  rho1 * max(0, SPEB / (gamma (1 - margin)) - 1)  +  rho2 * sum_k max(0, r - R_k)

with :math:`\rho_1 = 0.8\,e`, :math:`\rho_2 = 0.5\,e` (e = epoch, counted from 1), r = 0.05 bit/s/Hz.
The SPEB hinge is **relative** (divided by :math:`\gamma`; 002 prints :math:`\mathrm{SPEB}-\gamma` in m²,
whose size would depend on the power and geometry), with a training margin (default 10 %) so that
held-out samples, whose SPEB scatters around the training boundary, still meet :math:`\gamma`.
Rates in bit/s/Hz and SPEB in m² come from :func:`isac.metrics.problems.coop_localization.batch_terms`
(the one implementation of the metrics; batched, differentiable).

**Protocols.** The paper's (``protocol="full"``, ``isac train ... --full``, meant for a GPU): U = 9
GNN layers of widths [2L, 128, 128, 128, 256, 512, 256, 128, 2L] (output widths, see
:mod:`isac.learning.lian`), FC hidden width 128, 4000 training samples, 800 epochs, Adam lr 2e-4,
weight decay 5e-4, constant rate; batch 100, 500 validation and 1000 test samples (002 gives
neither); CNN 3 conv layers (64, 128, 128 channels) + one FC hidden layer of 1024. The **reduced**
protocol (default; what the shipped weights use) keeps the architecture types, the loss and Adam
with weight decay 5e-4 but shrinks everything so that one model trains in 1-3 minutes on one CPU
thread (:data:`REDUCED`): U = 4 GNN layers of widths [64, 64, 64, 2L], FC hidden 64, 2000 / 200 / 500
samples, 25 epochs, batch 16, lr 1e-3 with a cosine decay to 1 %. The SPEB weight
:math:`\rho_1 = 0.8 e` then only reaches 20 (800 epochs: 640); with the 10 % margin the reduced
models still meet :math:`\gamma` on 92-100 % of the test samples (the robust Homo GNN needed a 20 %
margin). Measured per-epoch times (one thread: reduced ~5.3 s LHGNN, ~3 s Homo GNN, ~2.2 s CNN; full
LHGNN 46.6 s, i.e. ~10 h for 800 epochs) are in the weights README (``isac/learning/weights/README.md``) and in every checkpoint (``timing``).

**Model selection.** Validation after every ``validate_every`` epochs; the kept weights are those with
the highest score = validation mean sum rate - ``select_penalty`` (1 bit/s/Hz) per percentage point by
which the share of validation samples meeting :math:`\gamma` falls short of ``select_pct`` (97 %)
(:func:`selection_score`). They are then scored on the test split.

**Seeds.** Sample i of a split is ``lian_preset(start + i, ...)``; train / validation / test are
consecutive disjoint ranges from ``start = split_seed_start(seed, tag)`` (62-bit,
:func:`isac.learning.train.split_seed_start` with this module's tag), far from the small seeds that
experiments and tests use. Weights are drawn from a ``torch.Generator`` seeded with the config seed,
the shuffling from another; the same config and thread count give identical weights.

Checkpoint file (``torch.save``, loaded with ``weights_only=True``)::

    {"format": "isac-lian-model/1", "kind": KIND, "config": asdict(LianTrainConfig),
     "data_version": DATA_VERSION, "state_dict": {name: float32 tensor},
     "history": [{"epoch", "train_loss", "val_sum_rate", "val_feasible", "val_speb_ratio", "time_s"}, ...],
     "val": {...}, "test": {"sum_rate_bps_hz", "feasible_pct", "speb_ratio_mean", "n"},
     "gamma_m2": gamma of the samples, "timing": {...}, "isac_version", "torch_version"}
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import isac
from isac.learning.lian import KINDS, LHGNN, LHGNNRZF, HomoGNN, LianCNN, paper_widths, reset_parameters
from isac.learning.train import LR_SCHEDULES, CheckpointError, lr_at, read_payload, split_seed_start, write_checkpoint
from isac.metrics.bounds.lian import target_angles
from isac.metrics.evaluate import POWER_RTOL
from isac.metrics.problems.coop_localization import SPEB_RTOL, CoopBatch, batch_terms
from isac.scenario.instances.coop_localization import CoopLocalizationInstance, lian_preset

CHECKPOINT_FORMAT = "isac-lian-model/1"
DATA_VERSION = "lian-preset/2"
"""Identifies the training-sample generator: ``lian`` preset with gamma = gamma_over_floor x SPEB floor
(version 1 was the earlier preset whose gamma was 2x the SPEB of a full-power beam at the target).
Bump it when the preset's draws or gamma change; checkpoints store it."""
SEED_TAG = 0x2A0002
"""Mixed into :func:`isac.learning.train.split_seed_start` (the zhao models use another tag)."""
SNR_SEED_TAG = 0x5A2
"""Seeds the per-sample CSI SNR draw (``np.random.default_rng([sample seed, SNR_SEED_TAG])``)."""

PROTOCOLS = ("reduced", "full")
RZF_HEAD_INIT = 0.1
"""``lhgnn-rzf``: the heads' last layer is drawn 10x smaller than PyTorch's range, so that the untrained
model is close to the regularised zero forcing of its output layer (:class:`isac.learning.lian.LHGNNRZF`)."""

REDUCED: dict[str, Any] = {
    "widths": [64, 64, 64, 32], "fc_hidden": 64, "cnn_channels": [64, 64], "cnn_hidden": [256],
    "n_train": 2000, "n_val": 200, "n_test": 500, "epochs": 25, "batch_size": 16, "lr": 1e-3,
    "lr_schedule": "cosine",
}
"""The reduced protocol: U = 4 GNN layers of output widths [64, 64, 64, 2L] (2L = 32), FC hidden 64,
CNN 2 conv layers of 64 channels + one FC hidden layer of 256; 2000 / 200 / 500 samples, 25 epochs,
batch 16, Adam lr 1e-3 with a cosine decay to 1 % (the paper's constant 2e-4 learns too slowly in
25 epochs; batch 16 gave a higher sum rate than 32 for the same epochs, see the weights README)."""


def full_protocol(num_antennas: int = 16) -> dict[str, Any]:
    """002's protocol (Sec. IV-A) with our choices where it is silent (module docstring)."""
    return {"widths": paper_widths(num_antennas), "fc_hidden": 128, "cnn_channels": [64, 128, 128],
            "cnn_hidden": [1024], "n_train": 4000, "n_val": 500, "n_test": 1000, "epochs": 800,
            "batch_size": 100, "lr": 2e-4, "lr_schedule": "constant"}


@dataclass
class LianTrainConfig:
    """Everything that determines a trained 002 model (stored in the checkpoint).

    Attributes:
        kind: "lhgnn", "lhgnn-noatt", "homognn", "cnn" or "lhgnn-rzf" (ours) (:mod:`isac.learning.lian`).
        protocol: "reduced" or "full" (informative: which defaults the sizes came from).
        power_dbm: per-BS budget P_n of the samples (dBm). gamma_over_floor: gamma / SPEB floor.
        csi_snr_db: None (exact CSI), [s] (fixed SNR) or [lo, hi] (integer SNR per sample, uniform).
        position_error_m: None (exact target) or [a, b]: ``|error|`` ~ U[a, b) per axis.
        num_users: K of the samples (the paper's 5).
        widths: output widths of the GNN layers. fc_hidden: hidden width of the U' = 2 FC layers.
        cnn_channels, cnn_hidden: conv channels and FC hidden widths of the CNN.
        epochs, batch_size, lr, weight_decay: Adam training (002: 800 epochs, lr 2e-4, weight decay 5e-4).
        lr_schedule: "constant" (002) or "cosine" (decay to 1 % of ``lr`` over the epochs, the reduced protocol's).
        n_train, n_val, n_test: split sizes (002: 4000 training samples; validation/test not given).
        rho1_per_epoch, rho2_per_epoch, rate_floor: loss (51) weights per epoch and r (002: 0.8, 0.5, 0.05).
        speb_margin: the hinge uses gamma (1 - speb_margin).
        select_pct, select_penalty: model selection score on the validation split, mean sum rate minus
            ``select_penalty`` (bit/s/Hz) per percentage point by which the share meeting gamma falls
            short of ``select_pct``.
        validate_every: epochs between validations (the last epoch is always validated).
        seed: sample seeds, initial weights and shuffling. threads: torch threads (0: leave as is).
        device: "cpu" or "cuda" (or any torch device string) for training.
    """

    kind: str = "lhgnn"
    protocol: str = "reduced"
    power_dbm: float = 20.0
    gamma_over_floor: float = 2.0
    csi_snr_db: list[float] | None = None
    position_error_m: list[float] | None = None
    num_users: int = 5
    widths: list[int] = dataclasses.field(default_factory=lambda: list(REDUCED["widths"]))
    fc_hidden: int = REDUCED["fc_hidden"]
    cnn_channels: list[int] = dataclasses.field(default_factory=lambda: list(REDUCED["cnn_channels"]))
    cnn_hidden: list[int] = dataclasses.field(default_factory=lambda: list(REDUCED["cnn_hidden"]))
    epochs: int = REDUCED["epochs"]
    batch_size: int = REDUCED["batch_size"]
    lr: float = REDUCED["lr"]
    lr_schedule: str = REDUCED["lr_schedule"]
    weight_decay: float = 5e-4
    n_train: int = REDUCED["n_train"]
    n_val: int = REDUCED["n_val"]
    n_test: int = REDUCED["n_test"]
    rho1_per_epoch: float = 0.8
    rho2_per_epoch: float = 0.5
    rate_floor: float = 0.05
    speb_margin: float = 0.1
    select_pct: float = 97.0
    select_penalty: float = 1.0
    validate_every: int = 1
    seed: int = 0
    threads: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.csi_snr_db is not None:
            snr = [float(x) for x in self.csi_snr_db]
            if len(snr) not in (1, 2) or not all(math.isfinite(x) for x in snr) or (len(snr) == 2 and snr[0] > snr[1]):
                raise ValueError(f"csi_snr_db must be [snr] or [lo, hi] with lo <= hi (dB), got {self.csi_snr_db}")
            self.csi_snr_db = snr
        if self.position_error_m is not None:
            err = [float(x) for x in self.position_error_m]
            if len(err) != 2 or not (0 <= err[0] <= err[1] < math.inf):
                raise ValueError(f"position_error_m must be [a, b] with 0 <= a <= b (m), got {self.position_error_m}")
            self.position_error_m = err
        if not (math.isfinite(self.power_dbm) and self.gamma_over_floor > 0 and math.isfinite(self.gamma_over_floor)):
            raise ValueError("power_dbm must be finite and gamma_over_floor positive and finite")
        self.widths = [int(w) for w in self.widths]
        self.cnn_channels = [int(c) for c in self.cnn_channels]
        self.cnn_hidden = [int(h) for h in self.cnn_hidden]
        if not self.widths or min(self.widths) < 1 or self.fc_hidden < 1:
            raise ValueError("widths must be 1 or more positive widths and fc_hidden >= 1")
        for name in ("num_users", "epochs", "batch_size", "n_train", "n_val", "validate_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_test < 0 or self.threads < 0 or self.seed < 0:
            raise ValueError("n_test, threads and seed must be >= 0")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not (0 <= self.speb_margin < 1 and 0 <= self.select_pct <= 100 and self.select_penalty >= 0):
            raise ValueError("speb_margin must be in [0, 1), select_pct in [0, 100] and select_penalty >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")

    @property
    def learning_rate(self) -> float:
        """Initial Adam rate (the name :func:`isac.learning.train.lr_at` reads)."""
        return float(self.lr)

    @property
    def robust(self) -> bool:
        """Whether the inputs carry estimation errors."""
        return self.csi_snr_db is not None or self.position_error_m is not None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LianTrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown LianTrainConfig keys: {', '.join(unknown)}")
        return cls(**d)


def config_for(kind: str, protocol: str = "reduced", **changes: Any) -> LianTrainConfig:
    """A config with the sizes of ``protocol`` ("reduced": :data:`REDUCED`, "full": :func:`full_protocol`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    sizes = dict(REDUCED) if protocol == "reduced" else full_protocol()
    return LianTrainConfig(kind=kind, protocol=protocol, **{**sizes, **changes})


def checkpoint_name(config: LianTrainConfig) -> str:
    """Default file name, e.g. ``lian-lhgnn-20dBm-g2.pt`` or ``lian-lhgnn-20dBm-g2-robust.pt``."""
    return f"lian-{config.kind}-{config.power_dbm:g}dBm-g{config.gamma_over_floor:g}{'-robust' if config.robust else ''}.pt"


def _float_list(text: str | None, option: str, counts: tuple[int, ...]) -> list[float] | None:
    """``"a,b"`` -> [a, b] with a count in ``counts`` (ValueError otherwise); None stays None."""
    if text is None:
        return None
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        vals = []
    if len(vals) not in counts:
        want = " or ".join({1: "one number", 2: "two comma-separated numbers A,B"}[c] for c in counts)
        raise ValueError(f"{option}: expected {want}, got {text!r}")
    return vals


def cli_config(target: str, *, full: bool = False, quick: bool = False, epochs: int | None = None,
               samples: int | None = None, seed: int = 0, lr: float = 0.0, threads: int = 0, power_dbm: float = 20.0,
               gamma_over_floor: float = 2.0, csi_snr_db: str | None = None, position_error: str | None = None,
               device: str = "cpu", speb_margin: float = 0.1) -> LianTrainConfig:
    """The config of ``isac train lian-KIND [options]`` (ValueError with a one-line message for bad options).

    ``csi_snr_db``: "S" or "LO,HI"; ``position_error``: "A,B"; ``quick``: 64 samples, 2 epochs;
    ``full``: the paper's protocol; ``lr`` 0 keeps the protocol's rate."""
    kind = target[len("lian-"):] if target.startswith("lian-") else target
    if kind not in KINDS:
        raise ValueError(f"unknown training target {target!r} (available: {', '.join('lian-' + k for k in KINDS)})")
    changes: dict[str, Any] = {"power_dbm": power_dbm, "gamma_over_floor": gamma_over_floor, "seed": seed,
                               "speb_margin": speb_margin,
                               "threads": threads, "device": device,
                               "csi_snr_db": _float_list(csi_snr_db, "--csi-snr-db", (1, 2)),
                               "position_error_m": _float_list(position_error, "--position-error", (2,))}
    if quick:
        changes.update({"epochs": 2, "n_train": 64, "n_val": 32, "n_test": 32})
    if epochs is not None:
        changes["epochs"] = epochs
    if samples is not None:
        changes["n_train"] = samples
    if lr > 0:
        changes["lr"] = lr
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device: not a torch device: {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here")
    return config_for(kind, "full" if full else "reduced", **changes)


# --- data -------------------------------------------------------------------------------------------


@dataclass
class LianData:
    """A split of samples, batched.

    Attributes:
        truth: the samples' :class:`CoopBatch` with the true channels and target (loss, scores).
        H_in: ``[n, N, L, K]`` complex128 channels the network sees (estimates in robust training).
        A_in: ``[n, N, L, Z]`` complex128 steering vectors at the (estimated) target seen from each BS.
        noise_w: comm noise power (W), shared. seeds: the ``lian_preset`` seeds.
    """

    truth: CoopBatch
    H_in: torch.Tensor
    A_in: torch.Tensor
    noise_w: float
    seeds: range

    def __len__(self) -> int:
        return int(self.H_in.shape[0])

    def subset(self, idx: torch.Tensor) -> LianData:
        t = self.truth
        truth = dataclasses.replace(t, **{k: getattr(t, k)[idx] for k in
                                          ("H", "alpha", "bs_positions_m", "target_position_m", "p_max_w",
                                           "speb_max_m2")})
        return dataclasses.replace(self, truth=truth, H_in=self.H_in[idx], A_in=self.A_in[idx])

    def to(self, device) -> LianData:
        return dataclasses.replace(self, truth=self.truth.to(device), H_in=self.H_in.to(device),
                                   A_in=self.A_in.to(device))


def steering_inputs(batch: CoopBatch) -> torch.Tensor:
    """``[B, N, L, 1]``: :math:`\\mathbf a_t(\\theta_n, \\beta_n)` of each BS at the batch's target (eq. (8))."""
    theta, beta = target_angles(batch.bs_positions_m, batch.target_position_m)
    return batch.array.steering(theta, beta)[..., None]


def data_from_instances(instances: list[CoopLocalizationInstance], seeds: range = range(0)) -> LianData:
    """Stack instances (sharing N, L, K and the rest :class:`CoopBatch` needs) into network inputs + truth."""
    if any(inst.num_sensing_streams != 1 for inst in instances):
        raise ValueError("the 002 networks output one sensing beam per target; the instances must have "
                         "num_sensing_streams = 1 (one target)")
    truth = CoopBatch.from_instances(instances, estimates=False)
    view = CoopBatch.from_instances(instances, estimates=True)
    return LianData(truth=truth, H_in=view.H, A_in=steering_inputs(view), noise_w=truth.noise_comm_w, seeds=seeds)


def split_seeds(config: LianTrainConfig) -> dict[str, range]:
    """Disjoint consecutive seed ranges ``{"train", "val", "test"}`` (module docstring)."""
    s = split_seed_start(config.seed, SEED_TAG)
    a, b = s + config.n_train, s + config.n_train + config.n_val
    return {"train": range(s, a), "val": range(a, b), "test": range(b, b + config.n_test)}


def make_instance(config: LianTrainConfig, seed: int) -> CoopLocalizationInstance:
    """Sample ``seed`` of the training distribution of ``config`` (a ``lian`` preset instance)."""
    snr = None
    if config.csi_snr_db is not None:
        lo, hi = config.csi_snr_db[0], config.csi_snr_db[-1]
        if hi > lo:
            rng = np.random.default_rng([int(seed), SNR_SEED_TAG])
            snr = float(rng.integers(math.ceil(lo), math.floor(hi) + 1))
        else:
            snr = lo
    err = tuple(config.position_error_m) if config.position_error_m is not None else None
    return lian_preset(int(seed), p_max_dbm=config.power_dbm, gamma_over_floor=config.gamma_over_floor,
                       num_users=config.num_users, csi_snr_db=snr, position_error_range_m=err)


def make_dataset(config: LianTrainConfig, split: str) -> LianData:
    """Draw a split ("train", "val" or "test") with ``lian_preset`` (a loop; ~3 ms per sample)."""
    seeds = split_seeds(config)[split]
    if len(seeds) == 0:
        raise ValueError(f"split {split!r} is empty")
    return data_from_instances([make_instance(config, s) for s in seeds], seeds)


# --- model, loss, scores ----------------------------------------------------------------------------


def build_model(config: LianTrainConfig, num_antennas: int = 16, num_bs: int = 3) -> torch.nn.Module:
    """An initialised model for ``config`` (weights from a generator seeded with ``config.seed``).

    ``num_bs`` matters only for the CNN (fixed N x (K+Z) grid; Z = 1); the GNNs run on any N, K, Z."""
    with torch.random.fork_rng(devices=[]):
        if config.kind in ("lhgnn", "lhgnn-noatt"):
            model: torch.nn.Module = LHGNN(num_antennas, config.widths, config.fc_hidden,
                                           attention=config.kind == "lhgnn")
        elif config.kind == "lhgnn-rzf":
            model = LHGNNRZF(num_antennas, config.widths, config.fc_hidden)
        elif config.kind == "homognn":
            model = HomoGNN(num_antennas, config.widths, config.fc_hidden)
        else:
            model = LianCNN(num_antennas, num_bs, config.num_users, 1, config.cnn_channels, config.cnn_hidden)
    reset_parameters(model, torch.Generator().manual_seed(int(config.seed)))
    if isinstance(model, LHGNNRZF):
        with torch.no_grad():  # start near the regularised zero forcing of its output layer
            for head in (model.head_c, model.head_s):
                head[-1].weight.mul_(RZF_HEAD_INIT)
                head[-1].bias.mul_(RZF_HEAD_INIT)
    return model


def lian_loss(terms: dict[str, torch.Tensor], gamma_m2: torch.Tensor, epoch: int, rho1_per_epoch: float = 0.8,
              rho2_per_epoch: float = 0.5, rate_floor: float = 0.05, speb_margin: float = 0.0) -> dict[str, torch.Tensor]:
    r"""Per-sample loss (51) from :func:`batch_terms` output (module docstring): ``loss [B]`` and its parts.

    ``gamma_m2 [B]``; ``epoch`` counted from 1 (:math:`\rho_1 = 0.8\,e`, :math:`\rho_2 = 0.5\,e`)."""
    rates = terms["rates_bps_hz"]
    sum_rate = rates.sum(-1)
    speb_hinge = torch.relu(terms["speb_m2"] / (gamma_m2 * (1.0 - speb_margin)) - 1.0)
    rate_hinge = torch.relu(rate_floor - rates).sum(-1)
    rho1, rho2 = rho1_per_epoch * epoch, rho2_per_epoch * epoch
    return {"loss": -sum_rate + rho1 * speb_hinge + rho2 * rate_hinge, "sum_rate": sum_rate,
            "speb_hinge": speb_hinge, "rate_hinge": rate_hinge}


def predict(model: torch.nn.Module, data: LianData) -> torch.Tensor:
    """Beams ``W [B, N, L, K+1]`` complex128 of ``model`` on ``data`` (inputs: the solver's view)."""
    return model(data.H_in, data.A_in, data.truth.p_max_w, data.noise_w)


def batch_loss(model: torch.nn.Module, data: LianData, config: LianTrainConfig, epoch: int) -> dict[str, torch.Tensor]:
    """Loss (51) terms of ``model`` on ``data`` (true channels and target) at ``epoch``."""
    terms = batch_terms(data.truth, predict(model, data))
    out = lian_loss(terms, data.truth.speb_max_m2, epoch, config.rho1_per_epoch, config.rho2_per_epoch,
                    config.rate_floor, config.speb_margin)
    out["speb_m2"] = terms["speb_m2"]
    return out


def scores(terms: dict[str, torch.Tensor], batch: CoopBatch) -> dict[str, torch.Tensor]:
    """Per-sample ``sum_rate``, ``feasible`` (the evaluator's tolerances: SPEB and every budget) and ``speb_ratio``."""
    speb = terms["speb_m2"]
    speb_ok = torch.isfinite(speb) & (speb <= batch.speb_max_m2 * (1 + SPEB_RTOL))
    power_ok = (terms["power_w"] <= batch.p_max_w * (1 + POWER_RTOL)).all(-1)
    return {"sum_rate": terms["sum_rate_bps_hz"], "feasible": speb_ok & power_ok,
            "speb_ratio": speb / batch.speb_max_m2}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, data: LianData, chunk: int = 500) -> dict[str, float]:
    """Mean sum rate (bit/s/Hz), % of samples meeting gamma and every budget, mean SPEB / gamma on ``data``."""
    was_training = model.training
    model.eval()
    rate, feas, ratio = [], [], []
    for i in range(0, len(data), chunk):
        part = data.subset(torch.arange(i, min(i + chunk, len(data)), device=data.H_in.device))
        s = scores(batch_terms(part.truth, predict(model, part)), part.truth)
        rate.append(s["sum_rate"])
        feas.append(s["feasible"])
        ratio.append(s["speb_ratio"])
    model.train(was_training)
    return {"sum_rate_bps_hz": float(torch.cat(rate).mean()), "feasible_pct": 100.0 * float(torch.cat(feas).double().mean()),
            "speb_ratio_mean": float(torch.cat(ratio).mean()), "n": len(data)}


def selection_score(val: dict[str, float], config: LianTrainConfig) -> float:
    """Validation score of the model selection: mean sum rate - penalty x shortfall of % meeting gamma below select_pct."""
    return val["sum_rate_bps_hz"] - config.select_penalty * max(0.0, config.select_pct - val["feasible_pct"])


# --- training ---------------------------------------------------------------------------------------


def train(config: LianTrainConfig, out_path: str | os.PathLike, echo: Callable[[str], None] | None = print,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train a model for ``config`` and save the selected checkpoint (module docstring) to ``out_path``.

    Adam (lr, weight decay of the config), mini-batches reshuffled every epoch, loss = batch mean of
    :func:`lian_loss` at the current epoch. Returns the checkpoint payload (as saved).
    """
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    device = torch.device(config.device)
    try:
        t_start = time.perf_counter()
        train_data = make_dataset(config, "train").to(device)
        val_data = make_dataset(config, "val").to(device)
        data_s = time.perf_counter() - t_start
        n_bs, length = train_data.H_in.shape[1:3]
        model = build_model(config, length, n_bs).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        shuffle = torch.Generator().manual_seed(int(config.seed) + 1)
        history: list[dict[str, float]] = []
        best: tuple[float, dict[str, torch.Tensor], dict[str, float], int] | None = None
        n = len(train_data)
        t_train = time.perf_counter()
        epochs_run = 0
        for epoch in range(1, config.epochs + 1):
            t_epoch = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(config, epoch)
            perm = torch.randperm(n, generator=shuffle).to(device)
            total = 0.0
            for i in range(0, n, config.batch_size):
                part = train_data.subset(perm[i:i + config.batch_size])
                loss = batch_loss(model, part, config, epoch)["loss"].mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"epoch {epoch}: training loss is not finite")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(part)
            epochs_run = epoch
            if epoch % config.validate_every == 0 or epoch == config.epochs:
                val = evaluate_model(model, val_data)
                history.append({"epoch": epoch, "train_loss": total / n, "val_sum_rate": val["sum_rate_bps_hz"],
                                "val_feasible": val["feasible_pct"], "val_speb_ratio": val["speb_ratio_mean"],
                                "time_s": time.perf_counter() - t_epoch})
                key = selection_score(val, config)
                if best is None or key > best[0]:
                    best = (key, copy.deepcopy(model.state_dict()), val, epoch)
                if echo:
                    echo(f"{config.kind} epoch {epoch}/{config.epochs}: train loss {total / n:.3f}, val sum rate "
                         f"{val['sum_rate_bps_hz']:.3f} bit/s/Hz, meets gamma {val['feasible_pct']:.1f}%, "
                         f"SPEB/gamma {val['speb_ratio_mean']:.3f} ({time.perf_counter() - t_epoch:.1f} s)")
            if progress:
                progress(epoch, config.epochs)
        train_s = time.perf_counter() - t_train
        assert best is not None
        model.load_state_dict(best[1])
        test = evaluate_model(model, make_dataset(config, "test").to(device)) if config.n_test else {}
        payload = {
            "format": CHECKPOINT_FORMAT,
            "kind": config.kind,
            "config": asdict(config),
            "data_version": DATA_VERSION,
            "state_dict": {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()},
            "history": history,
            "val": {**best[2], "epoch": best[3]},
            "test": test,
            "gamma_m2": float(train_data.truth.speb_max_m2[0]),
            "timing": {"data_s": data_s, "train_s": train_s, "epochs_run": epochs_run,
                       "s_per_epoch": train_s / max(1, epochs_run), "threads": torch.get_num_threads(),
                       "device": str(device)},
            "isac_version": isac.__version__,
            "torch_version": str(torch.__version__),
        }
        write_checkpoint(payload, out_path)
        if echo:
            echo(f"saved {out_path}: val (epoch {best[3]}) {best[2]['sum_rate_bps_hz']:.3f} bit/s/Hz, "
                 f"{best[2]['feasible_pct']:.1f}% meet gamma; "
                 + (f"test {test['sum_rate_bps_hz']:.3f} bit/s/Hz, {test['feasible_pct']:.1f}% meet gamma"
                    if test else "no test split"))
        return payload
    finally:
        torch.set_num_threads(old_threads)


# --- checkpoints ------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint payload with a validated header and config (``payload["config_obj"]``), or :class:`CheckpointError`."""
    payload = read_payload(path, CHECKPOINT_FORMAT, "isac lian model",
                           ("kind", "config", "state_dict", "data_version"))
    try:
        config = LianTrainConfig.from_dict(dict(payload["config"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad config: {e}") from None
    if config.kind != payload["kind"]:
        raise CheckpointError(f"{path}: kind {payload['kind']!r} disagrees with config kind {config.kind!r}")
    payload["config_obj"] = config
    return payload


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, LianTrainConfig, dict[str, Any]]:
    """Rebuild a checkpoint's model: ``(model in eval mode on device, its config, the payload)``.

    The architecture is inferred from the config and the stored weights (L from the first layer, N for
    the CNN from its output size). :class:`CheckpointError` (one line) if the weights do not fit."""
    payload = read_checkpoint(path)
    config = payload["config_obj"]
    sd = payload["state_dict"]
    try:
        if config.kind == "cnn":
            length = int(sd["convs.0.weight"].shape[1]) // 2
            n_bs = int(sd[f"fc.{2 * len(config.cnn_hidden)}.weight"].shape[0]) // (2 * length * (config.num_users + 1))
        else:
            first = next(v for k, v in sd.items() if k.endswith("f1.weight") or k.endswith("f1.bs-cc.weight"))
            length, n_bs = int(first.shape[1]) // 2, 3
        model = build_model(config, length, n_bs)
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, TypeError, KeyError, StopIteration, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: weights do not fit the {config.kind} architecture ({first_line[:160]})") from None
    model.eval()
    return model.to(device), config, payload


__all__ = [
    "CHECKPOINT_FORMAT", "DATA_VERSION", "LianData", "LianTrainConfig", "REDUCED", "batch_loss", "build_model",
    "checkpoint_name", "cli_config", "config_for", "data_from_instances", "evaluate_model", "full_protocol", "lian_loss",
    "load_checkpoint", "make_dataset", "make_instance", "predict", "read_checkpoint", "scores", "split_seeds",
    "steering_inputs", "train",
]
