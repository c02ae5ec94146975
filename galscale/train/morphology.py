"""Training task of the D16 disk classifier, on denoised (default) or raw contaminated inputs.

Seed 001's claim is that the classifier does better on denoised images than on raw ones. To test
it fairly, both classifiers are trained by this one task with the same architecture, data,
contaminated realisations, seeds and budget; only `input_kind` differs:

- "raw": the contaminated, noisy cutout (`galscale.train.denoiser.contaminate`);
- "denoised": the same cutout passed through the denoiser artefact (`denoise_batch`).

Labelled clean galaxies: the real pictures of `--images DIR` whose folder says disk / non-disk
(Galaxy Zoo 2 `spirals` = disk, `non_spirals` = not) and simulated stamps (`is_disk`), training
split only (see `galscale.train.denoiser` for the splits). Inputs are prepared once per worker
and kept as uint8. The artefact is the exported plain-torch `DiskClassifierInference`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from galscale.config import DEFAULT_NOISE, NoiseLaw
from galscale.images import absolute_folder
from galscale.models.morphology import (
    D16DiskClassifier,
    MorphologyConfig,
    architecture_dict,
    classifier_loss,
)
from galscale.train.denoiser import (
    CleanGalaxies,
    contaminate,
    load_clean_galaxies,
    split_train_val,
)
from galscale.train.loop import TrainConfig

BUILDER = "galscale.models.morphology:build_disk_classifier"
ARTIFACT_NAME = "morphology"
INPUT_KINDS = ("denoised", "raw")
CLASSIFIER_SEED_OFFSET = 500  # contamination stream of classifier data (denoiser used 0, 1)


def classifier_inputs(
    galaxies: CleanGalaxies,
    *,
    input_kind: str,
    realisations: int,
    seed: int,
    denoiser: torch.nn.Module | None = None,
    batch_size: int = 32,
    noise: NoiseLaw = DEFAULT_NOISE,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N * realisations, 3, 256, 256] classifier inputs and int64 labels.

    Row k is realisation k % realisations of galaxy k // realisations, contaminated with the
    same seeds whatever `input_kind` is, so raw and denoised sets differ only by the denoiser.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, not {input_kind!r}")
    if input_kind == "denoised" and denoiser is None:
        raise ValueError("input_kind='denoised' needs a denoiser model")
    from galscale.models.denoiser import denoise_batch

    n = len(galaxies) * realisations
    out = np.empty((n, *galaxies.images.shape[1:]), dtype=np.uint8)
    for start in range(0, n, batch_size):
        rows = range(start, min(n, start + batch_size))
        batch = np.stack([contaminate(galaxies.clean(k // realisations), seed,
                                      k // realisations, k % realisations, noise)
                          for k in rows])
        if input_kind == "denoised":
            batch = denoise_batch(denoiser, batch, batch_size=batch_size)
        out[start : start + len(rows)] = np.round(np.clip(batch, 0, 1) * 255.0).astype(np.uint8)
    return out, np.repeat(galaxies.labels, realisations)


class Uint8Images(Dataset):
    """(float32 image in [0, 1], int64 label) from uint8 storage."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images[i].astype(np.float32) / 255.0), self.labels[i]


def load_denoiser(path_or_name: str = "denoiser") -> torch.nn.Module:
    """The denoiser's inference module from an artefact folder or shipped name."""
    from galscale.registry import load_model

    return load_model(path_or_name).export()


@dataclass
class MorphologyTask:
    """`galscale.train.loop` task: D16 disk classifier on denoised or raw cutouts."""

    input_kind: str = "denoised"
    denoiser: str = "denoiser"  # artefact folder or shipped name (used when input_kind="denoised")
    images_dir: str | None = None
    n_sim: int = 200
    sim_seed: int = 1
    max_real: int = 0
    realisations: int = 2
    val_fraction: float = 0.1
    learning_rate: float = 2e-3
    noise: NoiseLaw = DEFAULT_NOISE
    architecture: MorphologyConfig = field(default_factory=MorphologyConfig)
    name: str = "morphology"

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, not {self.input_kind!r}")

    def build_model(self) -> D16DiskClassifier:
        return D16DiskClassifier(self.architecture)

    def labelled_training_galaxies(self) -> CleanGalaxies:
        galaxies = load_clean_galaxies(self.images_dir, n_sim=self.n_sim, sim_seed=self.sim_seed,
                                       split="train", max_real=self.max_real)
        labelled = np.flatnonzero(galaxies.labels >= 0)
        if len(labelled) == 0:
            raise ValueError("no labelled galaxies: image folders must be named e.g. "
                             "spirals/non_spirals, or use simulated stamps (n_sim > 0)")
        return galaxies.subset(labelled)

    def datasets(self, seed: int) -> tuple[Dataset, Dataset]:
        train, val = split_train_val(self.labelled_training_galaxies(), self.val_fraction)
        denoiser = load_denoiser(self.denoiser) if self.input_kind == "denoised" else None
        stream = seed + CLASSIFIER_SEED_OFFSET
        sets = []
        for part, reals, s in ((train, self.realisations, stream), (val, 1, stream + 1)):
            images, labels = classifier_inputs(part, input_kind=self.input_kind,
                                               realisations=reals, seed=s, denoiser=denoiser,
                                               noise=self.noise)
            sets.append(Uint8Images(images, labels))
        return sets[0], sets[1]

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        return classifier_loss(model(x), y)

    def optimizer(self, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=1e-4)

    def model_config(self) -> dict:
        return architecture_dict(self.architecture)

    def data_description(self) -> dict:
        return {
            "input_kind": self.input_kind,
            "denoiser": self.denoiser if self.input_kind == "denoised" else None,
            "images_dir": str(Path(self.images_dir).resolve()) if self.images_dir else None,
            "real_split": "train (file-name hash, 80 %), labelled folders only",
            "max_real": self.max_real, "n_sim": self.n_sim, "sim_seed": self.sim_seed,
            "realisations": self.realisations, "noise": asdict(self.noise),
            "val_fraction": self.val_fraction,
        }


def train_morphology(task: MorphologyTask, cfg: TrainConfig, out: str, command: str = "") -> dict:
    """Train the classifier with Ray Train; write the exported model's artefact to `out`."""
    from galscale.models.denoiser import count_flops
    from galscale.registry import load_artifact, save_artifact
    from galscale.train.loop import train, training_record

    start = time.time()
    result = train(task, cfg)
    exported = result.model.export()
    data = task.data_description()
    if task.input_kind == "denoised":
        data["denoiser_sha256"] = load_artifact(task.denoiser).sha256
    training = training_record(task, cfg, command, "see data_description") | {
        "data_description": data,
        "task_options": {k: v for k, v in asdict(task).items() if k != "architecture"},
        "history": result.history,
        "steps": result.steps,
        "wall_seconds": round(time.time() - start, 1),
        "exported_from": "galscale.models.morphology.D16DiskClassifier (escnn, D16)",
    }
    best = min(result.history, key=lambda h: h.get("val_loss", float("inf")))
    metrics = {"validation": {k: v for k, v in best.items() if k.startswith("val_")},
               "forward_flops_per_cutout": count_flops(exported),
               "parameters": int(sum(p.numel() for p in exported.parameters()))}
    artifact = save_artifact(exported, out, name=ARTIFACT_NAME, builder=BUILDER,
                             architecture=task.model_config(), training=training, metrics=metrics)
    return artifact.config


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Classifier options of `galscale train morphology` / jobs/train_morphology.py (the shared
    training options come from `galscale.cli.add_train_config_arguments`)."""
    from galscale.cli import add_noise_arguments

    p.add_argument("--input-kind", choices=INPUT_KINDS, default="denoised",
                   help="train on denoised inputs (the survey model, default) or on raw "
                   "contaminated inputs (the paper's baseline)")
    p.add_argument("--denoiser", default="denoiser",
                   help="denoiser artefact folder or shipped name (for --input-kind denoised)")
    p.add_argument("--images", default=None, type=absolute_folder,
                   help="folder of labelled galaxy pictures in sub-folders spirals/non_spirals "
                   "(or disk/non_disk); its 80 %% training split is used")
    p.add_argument("--n-sim", type=int, default=200, help="simulated labelled stamps (200)")
    p.add_argument("--max-real", type=int, default=0,
                   help="use at most this many real pictures (0: the whole training split)")
    p.add_argument("--realisations", type=int, default=2,
                   help="contaminated realisations per galaxy (2)")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate (2e-3)")
    add_noise_arguments(p)
    p.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many optimiser steps (0: no limit)")


def run(args: argparse.Namespace, cfg: TrainConfig) -> str:
    """`galscale train morphology`: train, write the artefact, return its folder."""
    import dataclasses
    import shlex
    import sys

    from galscale.cli import noise_law
    from galscale.registry import resolve_artifact_path

    denoiser = args.denoiser  # a folder is made absolute: the workers run in their trial folder
    if args.input_kind == "denoised" and Path(denoiser).is_dir():
        denoiser = str(resolve_artifact_path(denoiser).resolve())
    task = MorphologyTask(input_kind=args.input_kind, denoiser=denoiser,
                          images_dir=args.images, n_sim=args.n_sim, max_real=args.max_real,
                          realisations=args.realisations, learning_rate=args.learning_rate,
                          noise=noise_law(args))
    cfg = dataclasses.replace(cfg, max_steps=args.max_steps,
                              run_name=cfg.run_name or f"morphology-{task.input_kind}")
    out = args.out or f"runs/models/morphology-{task.input_kind}"
    config = train_morphology(task, cfg, out, command=shlex.join(["galscale", *sys.argv[1:]]))
    print(json.dumps(config["metrics"], indent=2))
    return out


__all__ = [
    "add_arguments", "run", "BUILDER", "ARTIFACT_NAME", "INPUT_KINDS", "classifier_inputs", "Uint8Images",
    "load_denoiser", "MorphologyTask", "train_morphology",
]
