"""The redshift-class training task for the generic Ray Train loop, and `train_redshift`.

Data: simulated 7-band stamps from `galscale.sim.stamps.redshift_stamps` (low-z galaxies,
high-z Lyman-break dropouts, BT-Settl brown dwarfs through the NIRCam filters), drawn afresh and
deterministically inside every worker from the run seed. The validation set comes from a
different simulation seed; held-out evaluation (`galscale.evaluate.redshift`) from yet another.

Class imbalance is handled in two deliberate ways:

1. synthetic over-sampling of the rare class: the training set is *simulated* with a raised
   brown-dwarf fraction (`train_fractions`, default 20 %), every brown dwarf a new template /
   temperature / magnitude / position draw, and every pass re-augmented (rotations, flips, noise);
2. class-weighted cross-entropy with inverse-frequency weights of the training labels, so the
   loss is balanced across the three classes whatever the fractions.

Random band drop-out (`band_dropout`) teaches the network to classify cutouts with a band
missing (zeroed by the preprocessing), as happens at survey edges and in the band ablation.

The per-cutout preprocessing is `galscale.models.redshift.preprocess_multiband`, the same
function the evaluation and the survey pipeline call.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from galscale.config import REDSHIFT_CLASSES
from galscale.models.redshift import (
    BALANCED_CLASS_PRIORS,
    RedshiftClassifier,
    augment_multiband,
    build_redshift_classifier,
    check_class_priors,
    preprocess_multiband,
)
from galscale.train.loop import TrainConfig

BUILDER = "galscale.models.redshift:build_redshift_classifier"
ARTIFACT_NAME = "redshift"

# Simulation seeds: training data uses seed * 1000 + 1, validation seed * 1000 + 2. Held-out
# evaluation sets use seeds >= HELDOUT_SEED_BASE, which training never touches.
HELDOUT_SEED_BASE = 7_000_000


def train_data_seed(seed: int) -> int:
    return seed * 1000 + 1


def val_data_seed(seed: int) -> int:
    return seed * 1000 + 2


def simulate_cutouts(
    n: int, seed: int, class_fractions: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """(flux, err, labels, meta) of `n` simulated 7-band stamps (thin wrapper over the sim)."""
    from galscale.sim.stamps import redshift_stamps

    flux, err, labels, meta = redshift_stamps(n, seed, class_fractions=class_fractions)
    return flux, err, np.asarray(labels, dtype=np.int64), meta


class AugmentedCutouts(Dataset):
    """Raw training cutouts; each access draws a fresh augmentation (from torch's global RNG,
    which the loop seeds) and runs the shared preprocessing."""

    def __init__(self, flux: np.ndarray, err: np.ndarray, labels: np.ndarray,
                 noise_max: float = 0.5, band_dropout: float = 0.0) -> None:
        self.flux, self.err = flux, err
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.noise_max = noise_max
        self.band_dropout = band_dropout

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        flux, err = augment_multiband(self.flux[i], self.err[i], rng, self.noise_max)
        if self.band_dropout and rng.random() < self.band_dropout:
            # one band absent, exactly as a survey cutout without it (zeroed by preprocessing)
            flux[int(rng.integers(flux.shape[0]))] = np.nan
        return preprocess_multiband(flux, err)[0], self.labels[i]


def class_weights(labels: np.ndarray, n_classes: int = len(REDSHIFT_CLASSES)) -> torch.Tensor:
    """Inverse-frequency weights, normalised so that a balanced set has weight 1 per class."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        missing = [REDSHIFT_CLASSES[i] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"training labels lack classes {missing}: cannot weight them")
    w = counts.sum() / (n_classes * counts)
    return torch.tensor(w, dtype=torch.float32)


def per_class_recall(logits: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict[str, float]:
    pred = logits.argmax(dim=1)
    out = {"accuracy": float((pred == y).float().mean())}
    for c in range(n_classes):
        sel = y == c
        if sel.any():
            out[f"recall_{REDSHIFT_CLASSES[c]}"] = float((pred[sel] == c).float().mean())
    return out


@dataclass
class RedshiftTask:
    """Training task for `galscale.train.loop.train`."""

    n_train: int = 6000
    n_val: int = 1200
    train_fractions: tuple[float, float, float] = (0.4, 0.4, 0.2)
    class_weighting: str = "inverse_frequency"  # or "none"
    noise_max: float = 0.5
    band_dropout: float = 0.15  # probability that a training cutout loses one random band
    learning_rate: float = 5e-4
    lr_schedule: str = "constant"  # or "cosine": anneal to 2 % of learning_rate over total_steps
    total_steps: int = 0  # optimizer steps of the whole run (the cosine schedule's length)
    architecture: dict[str, Any] = field(default_factory=dict)
    name: str = "redshift"

    def __post_init__(self) -> None:
        if self.class_weighting not in ("inverse_frequency", "none"):
            raise ValueError(f"class_weighting must be 'inverse_frequency' or 'none', "
                             f"not {self.class_weighting!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and self.total_steps < 1:
            raise ValueError("the cosine schedule needs total_steps >= 1")
        self._weights: torch.Tensor | None = None

    def effective_class_priors(self) -> tuple[float, ...]:
        """Class priors the trained softmax reflects: balanced under inverse-frequency weights,
        else the training fractions (recorded for `redshift_probabilities`' prior shift)."""
        if self.class_weighting == "inverse_frequency":
            return BALANCED_CLASS_PRIORS
        return check_class_priors(self.train_fractions)

    def build_model(self) -> RedshiftClassifier:
        return build_redshift_classifier(
            **({"training_class_priors": self.effective_class_priors()} | self.architecture))

    def model_config(self) -> dict[str, Any]:
        return dict(self.architecture)

    def datasets(self, seed: int) -> tuple[Dataset, Dataset]:
        flux, err, labels, _ = simulate_cutouts(self.n_train, train_data_seed(seed),
                                                self.train_fractions)
        self._weights = (class_weights(labels) if self.class_weighting == "inverse_frequency"
                         else torch.ones(len(REDSHIFT_CLASSES)))
        vflux, verr, vlabels, _ = simulate_cutouts(self.n_val, val_data_seed(seed),
                                                   self.train_fractions)
        val = TensorDataset(preprocess_multiband(vflux, verr),
                            torch.as_tensor(vlabels, dtype=torch.int64))
        return AugmentedCutouts(flux, err, labels, self.noise_max, self.band_dropout), val

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, Mapping[str, float]]:
        x, y = batch
        logits = model(x)
        w = self._weights.to(logits.device) if self._weights is not None else None
        loss = torch.nn.functional.cross_entropy(logits, y, weight=w)
        return loss, per_class_recall(logits.detach(), y, logits.shape[1])

    def optimizer(self, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.learning_rate)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        """Per-step learning-rate schedule of the shared loop (None: constant rate)."""
        if self.lr_schedule == "constant":
            return None
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.total_steps, eta_min=0.02 * self.learning_rate)


def train_redshift(task: RedshiftTask, cfg: TrainConfig, out: str, command: str = "") -> dict[str, Any]:
    """Train `task` with Ray Train (`galscale.train.loop.train`) and write the artefact to `out`;
    returns its config dict (architecture, training provenance, validation metrics, FLOPs)."""
    from galscale.train.loop import train

    start = time.time()
    result = train(task, cfg)
    return write_artifact(task, cfg, result.model, result.history, result.steps, out, command,
                          wall_seconds=time.time() - start)


def write_artifact(task: RedshiftTask, cfg: TrainConfig, model: torch.nn.Module,
                   history: list[dict[str, float]], steps: int, out: str, command: str,
                   wall_seconds: float, note: str = "") -> dict[str, Any]:
    """Save a trained model with its provenance (command, data, history, validation metrics,
    FLOPs per cutout) as a registry artefact; returns its config dict."""
    from galscale.models.redshift import classifier_flops
    from galscale.registry import save_artifact
    from galscale.train.loop import training_record

    architecture = _architecture_of(model, task.architecture)
    data = (f"galscale.sim.stamps.redshift_stamps: train n={task.n_train} "
            f"seed={train_data_seed(cfg.seed)} fractions={list(task.train_fractions)}; "
            f"validation n={task.n_val} seed={val_data_seed(cfg.seed)}")
    training = training_record(task, cfg, command, data) | {
        "task_options": {k: v for k, v in asdict(task).items() if k != "architecture"},
        "imbalance_handling": "simulated brown-dwarf over-sampling (train_fractions) + "
                              "inverse-frequency class-weighted cross-entropy + augmentation",
        "history": history,
        "steps": steps,
        "wall_seconds": round(wall_seconds, 1),
        "preprocessing": "galscale.models.redshift.preprocess_multiband",
    }
    if note:
        training["note"] = note
    best = min(history, key=lambda h: h.get("val_loss", float("inf")))
    metrics = {"validation": {k: v for k, v in best.items() if k.startswith("val_")},
               "forward_flops_per_cutout": classifier_flops(model),
               "parameters": int(sum(p.numel() for p in model.parameters()))}
    artifact = save_artifact(model, out, name=ARTIFACT_NAME, builder=BUILDER,
                             architecture=architecture, training=training, metrics=metrics)
    return artifact.config


def export_checkpoint(checkpoint_dir: str, task: RedshiftTask, cfg: TrainConfig, out: str,
                      command: str, wall_seconds: float, note: str) -> dict[str, Any]:
    """Write the artefact from a Ray Train checkpoint of an interrupted `train redshift` run
    (its best-validation weights), recording why in `training.note`."""
    from pathlib import Path

    from galscale.train.loop import STATE_FILE

    saved = torch.load(Path(checkpoint_dir) / STATE_FILE, weights_only=True, map_location="cpu")
    model = task.build_model()
    model.load_state_dict(saved.get("best_model") or saved["model"])
    model.eval()
    return write_artifact(task, cfg, model, list(saved["history"]), int(saved["state"]["step"]),
                          out, command, wall_seconds, note=note + f" (checkpoint {checkpoint_dir})")


def _architecture_of(model: RedshiftClassifier, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The full builder arguments (defaults filled in), JSON-friendly."""
    import inspect

    sig = inspect.signature(RedshiftClassifier.__init__)
    arch = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    arch.update(overrides)
    arch["training_class_priors"] = list(model.training_class_priors)
    arch["survey_class_priors"] = list(model.survey_class_priors)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}


__all__ = [
    "RedshiftTask", "AugmentedCutouts", "class_weights", "simulate_cutouts", "train_redshift",
    "train_data_seed", "val_data_seed", "HELDOUT_SEED_BASE", "BUILDER", "ARTIFACT_NAME",
    "add_arguments", "task_from_args", "run", "write_artifact", "export_checkpoint",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Redshift options of `galscale train redshift` / jobs/train_redshift.py (the shared
    training options come from `galscale.cli.add_train_config_arguments`)."""
    d = RedshiftTask()
    p.add_argument("--n-train", type=int, default=d.n_train,
                   help=f"simulated training cutouts ({d.n_train})")
    p.add_argument("--n-val", type=int, default=d.n_val,
                   help=f"simulated validation cutouts ({d.n_val})")
    p.add_argument("--band-dropout", type=float, default=d.band_dropout,
                   help=f"probability that a training cutout loses one band ({d.band_dropout})")
    p.add_argument("--noise-max", type=float, default=d.noise_max,
                   help="augmentation: extra Gaussian noise of up to this many times the pixel "
                        f"error ({d.noise_max})")
    p.add_argument("--class-weighting", choices=("inverse_frequency", "none"),
                   default=d.class_weighting, help=f"loss class weights ({d.class_weighting})")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate,
                   help=f"Adam learning rate ({d.learning_rate}, as in the paper)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default=d.lr_schedule,
                   help="learning rate over the run: constant, or cosine annealing to 2 %% of "
                        f"it by the last step ({d.lr_schedule})")


def task_from_args(args: argparse.Namespace, cfg: TrainConfig) -> RedshiftTask:
    """The training task of parsed `add_arguments` options (the cosine schedule spans the run)."""
    steps_per_epoch = math.ceil(math.ceil(args.n_train / max(cfg.num_workers, 1)) / cfg.batch_size)
    return RedshiftTask(n_train=args.n_train, n_val=args.n_val, band_dropout=args.band_dropout,
                        noise_max=args.noise_max, class_weighting=args.class_weighting,
                        learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
                        total_steps=steps_per_epoch * cfg.epochs)


def run(args: argparse.Namespace, cfg: TrainConfig) -> str:
    """`galscale train redshift`: train, write the artefact, return its folder."""
    import dataclasses
    import shlex
    import sys

    task = task_from_args(args, cfg)
    cfg = dataclasses.replace(cfg, run_name=cfg.run_name or "redshift")
    out = args.out or "runs/models/redshift"
    config = train_redshift(task, cfg, out, command=shlex.join(["galscale", *sys.argv[1:]]))
    print(json.dumps(config["metrics"], indent=2))
    return out
