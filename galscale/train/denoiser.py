"""Training task of the U-Net VAE denoiser, and the clean / contaminated data both morphology
models are trained and evaluated on.

Clean galaxies (seed 001 used 1,400 clean EFIGI galaxies): the real pictures of `--images DIR`
(e.g. the 1,400 Galaxy Zoo 2 JPEGs; optional) plus simulated JWST-like stamps from
`galscale.sim.stamps`. Each clean galaxy gets `realisations` (10, as in the paper) contaminated
copies: 1-3 injected stars / galaxies (`galscale.sim.contaminants.add_contaminants`) plus noise
(`add_noise`). Realisation r of galaxy i is drawn from `default_rng([seed, i, r])`, so every
worker and every rerun sees identical pairs without storing them.

Splits (documented in docs/morphology.md): real pictures are split by a hash of the file name
(`images.holdout_mask`, 20 % held out, never used for training or validation); simulated stamps
use seed `sim_seed` for training/validation and `sim_seed + HELDOUT_SEED_OFFSET` for held-out
evaluation; validation is the last `val_fraction` of the training galaxies.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from galscale.config import DEFAULT_NOISE, NoiseLaw
from galscale.images import absolute_folder, folder_labels, holdout_mask, list_images, load_images
from galscale.models.denoiser import DenoiserConfig, UNetVAE, architecture_dict, denoiser_loss
from galscale.train.loop import TrainConfig

HELDOUT_SEED_OFFSET = 10_000
GZ2_CROP_FRACTION = 0.6
CONTAMINANT_DRAW_METHOD = "no_pixel"  # GalSim method: ~500x faster than "auto" for Sersics  # GZ2 424x424 JPEGs: keep the central 254 px (the galaxy) -> 256


@dataclass
class CleanGalaxies:
    """Clean cutouts (uint8 [N, 3, 256, 256]), disk labels (1 disk, 0 not, -1 unknown), origins."""

    images: np.ndarray
    labels: np.ndarray
    origins: list[str]  # file path, or "sim:<seed>:<index>"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def clean(self, index: int) -> np.ndarray:
        """float32 [3, 256, 256] in [0, 1]."""
        return self.images[index].astype(np.float32) / 255.0

    def subset(self, index: np.ndarray) -> CleanGalaxies:
        return CleanGalaxies(self.images[index], self.labels[index],
                             [self.origins[i] for i in index], self.skipped)


def stamp_cache_dir() -> Path:
    """Where simulated clean stamps are cached: $GALSCALE_CACHE/stamps or ~/.cache/galscale/stamps."""
    root = os.environ.get("GALSCALE_CACHE") or Path.home() / ".cache" / "galscale"
    return Path(root) / "stamps"


def simulated_stamps(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, 3, 256, 256] clean stamps, int64 is_disk) from `galscale.sim.stamps`.

    GalSim needs ~1 s per stamp, and every worker and the evaluation need the same stamps, so
    they are cached on disk keyed by (n, seed); the simulation is deterministic in its seed, so
    a cache hit is the same data. The first n of a larger cached draw are NOT reused (a draw of
    n stamps is not a prefix of a draw of more).
    """
    from galscale.sim.stamps import morphology_stamps

    path = stamp_cache_dir() / f"morphology_n{n}_seed{seed}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            return cached["images"], cached["is_disk"]
    sim, is_disk, _ = morphology_stamps(n, seed=seed)
    images = np.round(np.clip(sim, 0.0, 1.0) * 255.0).astype(np.uint8)
    is_disk = np.asarray(is_disk, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, is_disk=is_disk)
    tmp.replace(path)  # atomic: concurrent workers never read a half-written file
    return images, is_disk


def load_clean_galaxies(
    images_dir: str | None,
    *,
    n_sim: int,
    sim_seed: int,
    split: str,
    max_real: int = 0,
    crop_fraction: float = GZ2_CROP_FRACTION,
) -> CleanGalaxies:
    """Real pictures of `images_dir` (split "train" or "heldout") plus `n_sim` simulated stamps.

    `max_real` > 0 keeps an evenly spaced subset of the real split (balanced across folders,
    since the file list is sorted by folder). Unreadable pictures are skipped and listed in
    `.skipped` (they are recorded in the artefact config), never dropped silently.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    parts_img, parts_lab, origins = [], [], []
    skipped: list[tuple[str, str]] = []
    if images_dir:
        paths = list_images(images_dir)
        if not paths:
            raise ValueError(f"no JPEG/PNG/FITS pictures under {images_dir}")
        held = holdout_mask(paths)
        paths = [p for p, h in zip(paths, held, strict=True) if h == (split == "heldout")]
        if max_real and len(paths) > max_real:
            keep = np.linspace(0, len(paths) - 1, max_real).round().astype(int)
            paths = [paths[i] for i in keep]
        loaded = load_images(paths, crop_fraction=crop_fraction, on_error="skip")
        parts_img.append(loaded.images)
        parts_lab.append(folder_labels(loaded.paths))
        origins += loaded.paths
        skipped += loaded.skipped
    if n_sim > 0:
        seed = sim_seed + (HELDOUT_SEED_OFFSET if split == "heldout" else 0)
        sim, is_disk = simulated_stamps(n_sim, seed)
        parts_img.append(sim)
        parts_lab.append(is_disk)
        origins += [f"sim:{seed}:{i}" for i in range(n_sim)]
    if not parts_img:
        raise ValueError("no clean galaxies: give an image folder and/or n_sim > 0")
    return CleanGalaxies(np.concatenate(parts_img), np.concatenate(parts_lab), origins, skipped)


def contaminate(clean: np.ndarray, seed: int, index: int, realisation: int,
                noise: NoiseLaw = DEFAULT_NOISE) -> np.ndarray:
    """Realisation `realisation` of clean galaxy `index`: 1-3 contaminants plus noise drawn by
    `noise`, in [0, 1]."""
    from galscale.sim.contaminants import add_contaminants, add_noise

    rng = np.random.default_rng([seed, index, realisation])
    dirty = add_contaminants(clean, rng, n_range=(1, 3), draw_method=CONTAMINANT_DRAW_METHOD)
    return np.clip(add_noise(dirty, rng, law=noise), 0.0, 1.0).astype(np.float32)


class ContaminatedPairs(Dataset):
    """(contaminated noisy input, clean target) float32 tensors, `realisations` per galaxy.

    `crop` > 0 returns a `crop`x`crop` window of the pair at a position drawn from the same
    seeded generator (the network is fully convolutional: crops make training steps cheaper
    while the contamination is still made on the whole cutout).
    """

    def __init__(self, galaxies: CleanGalaxies, realisations: int, seed: int, crop: int = 0,
                 noise: NoiseLaw = DEFAULT_NOISE) -> None:
        if realisations < 1:
            raise ValueError("realisations must be >= 1")
        size = galaxies.images.shape[-1]
        if crop < 0 or crop > size or (crop and crop % 16):
            raise ValueError(f"crop must be 0 or a multiple of 16 up to {size}, got {crop}")
        self.galaxies, self.realisations, self.seed, self.crop = galaxies, realisations, seed, crop
        self.noise = noise

    def __len__(self) -> int:
        return len(self.galaxies) * self.realisations

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, realisation = divmod(int(item), self.realisations)
        clean = self.galaxies.clean(index)
        noisy = contaminate(clean, self.seed, index, realisation, self.noise)
        if self.crop and self.crop < clean.shape[-1]:
            rng = np.random.default_rng([self.seed, index, realisation, 1])
            top, left = rng.integers(0, clean.shape[-1] - self.crop + 1, 2)
            window = np.s_[:, top : top + self.crop, left : left + self.crop]
            noisy, clean = np.ascontiguousarray(noisy[window]), np.ascontiguousarray(clean[window])
        return torch.from_numpy(noisy), torch.from_numpy(clean)


def split_train_val(galaxies: CleanGalaxies, val_fraction: float) -> tuple[CleanGalaxies, CleanGalaxies]:
    """Every k-th galaxy goes to validation (deterministic, spread over real and simulated)."""
    n = len(galaxies)
    step = max(2, int(round(1.0 / max(val_fraction, 1e-6))))
    val = np.arange(n) % step == step - 1
    return galaxies.subset(np.flatnonzero(~val)), galaxies.subset(np.flatnonzero(val))


@dataclass
class DenoiserTask:
    """`galscale.train.loop` task: contaminated noisy cutouts -> clean cutouts."""

    images_dir: str | None = None
    n_sim: int = 200
    sim_seed: int = 1
    max_real: int = 0
    realisations: int = 10
    val_realisations: int = 2
    val_fraction: float = 0.1
    train_crop: int = 0  # 0: whole 256x256 cutouts; else random crops of this size for training
    learning_rate: float = 2e-3
    noise: NoiseLaw = DEFAULT_NOISE
    architecture: DenoiserConfig = field(default_factory=DenoiserConfig)
    name: str = "denoiser"

    def build_model(self) -> UNetVAE:
        return UNetVAE(self.architecture)

    def clean_training_galaxies(self) -> CleanGalaxies:
        return load_clean_galaxies(self.images_dir, n_sim=self.n_sim, sim_seed=self.sim_seed,
                                   split="train", max_real=self.max_real)

    def datasets(self, seed: int) -> tuple[Dataset, Dataset]:
        train, val = split_train_val(self.clean_training_galaxies(), self.val_fraction)
        return (ContaminatedPairs(train, self.realisations, seed, crop=self.train_crop,
                                  noise=self.noise),
                ContaminatedPairs(val, self.val_realisations, seed + 1, noise=self.noise))

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        noisy, clean = batch
        recon, mu, logvar = model(noisy)
        return denoiser_loss(recon, clean, mu, logvar, recon_loss=self.architecture.recon_loss,
                             beta=self.architecture.beta)

    def optimizer(self, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=1e-4)

    def model_config(self) -> dict:
        return architecture_dict(self.architecture)

    def data_description(self) -> dict:
        return {
            "images_dir": str(Path(self.images_dir).resolve()) if self.images_dir else None,
            "real_split": "train (file-name hash, 80 %)", "max_real": self.max_real,
            "n_sim": self.n_sim, "sim_seed": self.sim_seed, "realisations": self.realisations,
            "contaminants_per_image": [1, 3], "noise": asdict(self.noise),
            "val_fraction": self.val_fraction,
            "train_crop": self.train_crop or "full cutout",
        }


BUILDER = "galscale.models.denoiser:build_denoiser"
ARTIFACT_NAME = "denoiser"


def train_denoiser(task: DenoiserTask, cfg: TrainConfig, out: str, command: str = "") -> dict:
    """Train the denoiser with Ray Train and write its artefact to `out`; returns the config."""
    import time

    from galscale.models.denoiser import count_flops
    from galscale.registry import save_artifact
    from galscale.train.loop import train, training_record

    start = time.time()
    result = train(task, cfg)
    training = training_record(task, cfg, command, "see data_description") | {
        "data_description": task.data_description(),
        "task_options": {k: v for k, v in asdict(task).items() if k != "architecture"},
        "history": result.history,
        "steps": result.steps,
        "wall_seconds": round(time.time() - start, 1),
    }
    best = min(result.history, key=lambda h: h.get("val_loss", float("inf")))
    metrics = {"validation": {k: v for k, v in best.items() if k.startswith("val_")},
               "forward_flops_per_cutout": count_flops(result.model.export()),
               "parameters": int(sum(p.numel() for p in result.model.parameters()))}
    artifact = save_artifact(result.model, out, name=ARTIFACT_NAME, builder=BUILDER,
                             architecture=task.model_config(), training=training, metrics=metrics)
    return artifact.config


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Denoiser options of `galscale train denoiser` / jobs/train_denoiser.py (the shared
    training options come from `galscale.cli.add_train_config_arguments`)."""
    from galscale.cli import add_noise_arguments

    p.add_argument("--images", default=None, type=absolute_folder,
                   help="folder of clean galaxy pictures (JPEG/PNG/FITS, searched recursively), "
                   "e.g. ../shared/data/gz2_spiral_train; its 80 %% training split is used")
    p.add_argument("--n-sim", type=int, default=200, help="simulated clean JWST-like stamps (200)")
    p.add_argument("--max-real", type=int, default=0,
                   help="use at most this many real pictures (0: the whole training split)")
    p.add_argument("--realisations", type=int, default=10,
                   help="contaminated realisations per clean galaxy (10, as in the paper)")
    p.add_argument("--train-crop", type=int, default=0,
                   help="train on random crops of this size (multiple of 16; 0: whole cutouts). "
                   "Validation always uses whole cutouts")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate (2e-3)")
    p.add_argument("--recon-loss", choices=("bce", "mse"), default="bce",
                   help="reconstruction loss (bce, as in the paper)")
    p.add_argument("--beta", type=float, default=1e-3, help="weight of the KL term (1e-3)")
    add_noise_arguments(p)
    p.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many optimiser steps (0: no limit)")


def run(args: argparse.Namespace, cfg: TrainConfig) -> str:
    """`galscale train denoiser`: train, write the artefact, return its folder."""
    import dataclasses
    import shlex
    import sys

    from galscale.cli import noise_law

    task = DenoiserTask(images_dir=args.images, n_sim=args.n_sim, max_real=args.max_real,
                        realisations=args.realisations, learning_rate=args.learning_rate,
                        train_crop=args.train_crop, noise=noise_law(args),
                        architecture=DenoiserConfig(recon_loss=args.recon_loss, beta=args.beta))
    cfg = dataclasses.replace(cfg, max_steps=args.max_steps, run_name=cfg.run_name or task.name)
    out = args.out or f"runs/models/{task.name}"
    config = train_denoiser(task, cfg, out, command=shlex.join(["galscale", *sys.argv[1:]]))
    print(json.dumps(config["metrics"], indent=2))
    return out


__all__ = [
    "BUILDER", "ARTIFACT_NAME", "train_denoiser", "add_arguments", "run", "HELDOUT_SEED_OFFSET",
    "GZ2_CROP_FRACTION", "stamp_cache_dir", "simulated_stamps", "CleanGalaxies",
    "load_clean_galaxies",
    "contaminate", "ContaminatedPairs", "split_train_val", "DenoiserTask",
]
