"""Training task for the spectral VAE, run by the generic loop in `galscale.train.loop`.

Data: a Parquet spectra table (`galscale.spectra.io` schema) or, when `spectra_path` is empty,
`n_simulated` spectra from `galscale.sim.spectra` drawn with the run's seed. Each worker
rebuilds the same data and the same 85/15 train/validation split from the seed. Hard-flagged
spectra (see `galscale.spectra.preprocess`) cannot be normalised and are left out of training;
their number is recorded in `data_summary()` and the artefact's provenance.

Hyper-parameters follow seed 003: Adam with L2 weight decay 1e-3, learning rate 1e-4 decaying
by 0.95 every 500 steps, gradient clipping (TrainConfig.grad_clip_norm) and early stopping
(TrainConfig.early_stopping_patience) on the validation loss.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from galscale.models.spectral_vae import SpectralVAE, build_spectral_vae, vae_loss
from galscale.spectra.preprocess import PreprocessConfig, PreprocessedSpectra, preprocess_spectra
from galscale.train.loop import TrainConfig

BUILDER = "galscale.models.spectral_vae:build_spectral_vae"


class MaskedSpectraDataset(Dataset):
    """(x, mask) pairs of preprocessed spectra as a dict batch {"x", "mask"}."""

    def __init__(self, x: np.ndarray, mask: np.ndarray) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "mask": self.mask[i]}


def split_indices(n: int, seed: int, val_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) row indices; 85/15 by default."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_training_spectra(
    spectra_path: str, n_simulated: int, seed: int, preprocess: PreprocessConfig
) -> PreprocessedSpectra:
    """Preprocessed training spectra from a Parquet table or the simulator."""
    if spectra_path:
        from galscale.spectra.io import read_spectra_parquet

        batch = read_spectra_parquet(spectra_path)
        return preprocess_spectra(batch.wave, batch.flux, batch.err, batch.z, preprocess)
    from galscale.sim.spectra import simulate_spectra

    sim = simulate_spectra(n_simulated, seed=seed)
    return preprocess_spectra(sim.wave_um, sim.flux, sim.err, sim.z, preprocess)


@dataclass
class SpectralVAETask:
    """The spectral VAE as a `galscale.train.loop.TrainTask`."""

    spectra_path: str = ""
    n_simulated: int = 6000
    data_seed: int = 1
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256, 128, 64)
    lr: float = 1e-4
    weight_decay: float = 1e-3
    lr_decay: float = 0.95
    lr_decay_steps: int = 500
    beta: float = 1.0
    val_fraction: float = 0.15
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    name: str = "spectral_vae"

    def model_config(self) -> dict[str, Any]:
        """Architecture arguments of `build_spectral_vae` (stored in the artefact)."""
        return {"n_inputs": self.preprocess.grid_size, "hidden": list(self.hidden),
                "latent_dim": self.latent_dim}

    def build_model(self) -> SpectralVAE:
        return build_spectral_vae(**self.model_config())

    def _usable(self) -> PreprocessedSpectra:
        return load_training_spectra(self.spectra_path, self.n_simulated, self.data_seed,
                                     self.preprocess)

    def datasets(self, seed: int) -> tuple[Dataset, Dataset]:
        pre = self._usable()
        keep = np.flatnonzero(pre.mask.any(axis=1))
        tr, va = split_indices(keep.size, seed, self.val_fraction)
        return (MaskedSpectraDataset(pre.x[keep[tr]], pre.mask[keep[tr]]),
                MaskedSpectraDataset(pre.x[keep[va]], pre.mask[keep[va]]))

    def data_summary(self) -> dict[str, Any]:
        """Counts for provenance: spectra read, hard-flagged (excluded), used."""
        pre = self._usable()
        n_flagged = int((~pre.mask.any(axis=1)).sum())
        return {"spectra_path": self.spectra_path or None,
                "n_simulated": 0 if self.spectra_path else self.n_simulated,
                "data_seed": self.data_seed, "n_spectra": int(pre.x.shape[0]),
                "n_flagged_excluded": n_flagged, "preprocess": asdict(self.preprocess)}

    def loss(
        self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Mapping[str, float]]:
        recon, mu, logvar = model(batch["x"])
        return vae_loss(batch["x"], batch["mask"], recon, mu, logvar, beta=self.beta)

    def optimizer(self, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_decay_steps,
                                               gamma=self.lr_decay)


def train_spectral_vae(task: SpectralVAETask, cfg: TrainConfig, out: str,
                       command: str = "") -> dict[str, Any]:
    """Train the VAE with the shared Ray Train loop and write its registry artefact to `out`."""
    import time

    from galscale.registry import save_artifact
    from galscale.train.loop import train, training_record

    start = time.time()
    result = train(task, cfg)
    training = training_record(task, cfg, command, "see data_summary") | {
        "data_summary": task.data_summary(),
        "task_options": {k: v for k, v in asdict(task).items() if k != "preprocess"},
        "history": result.history, "steps": result.steps,
        "wall_seconds": round(time.time() - start, 1),
    }
    best = min(result.history, key=lambda h: h.get("val_loss", float("inf")))
    metrics = {"validation": {k: v for k, v in best.items() if k.startswith("val_")},
               "parameters": int(sum(p.numel() for p in result.model.parameters()))}
    artifact = save_artifact(result.model, out, name=task.name, builder=BUILDER,
                             architecture=task.model_config(), training=training, metrics=metrics)
    return artifact.config


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `galscale train spectral` (the shared TrainConfig options are added by the CLI)."""
    p.add_argument("--spectra", default="",
                   help="Parquet spectra table to train on (default: simulate --n-sim spectra)")
    p.add_argument("--n-sim", type=int, default=6000, help="simulated training spectra (6000)")
    p.add_argument("--data-seed", type=int, default=1, help="seed of the simulated spectra (1)")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="initial learning rate (1e-4)")
    p.add_argument("--grad-clip", type=float, default=5.0, help="gradient-norm clip (5.0)")
    p.add_argument("--patience", type=int, default=10,
                   help="early stopping: epochs without validation improvement (10)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after N optimiser steps (0: off)")


def run(args: argparse.Namespace, cfg: TrainConfig) -> str:
    """`galscale train spectral`: train, write the artefact, return its folder."""
    import dataclasses
    import shlex
    import sys

    task = SpectralVAETask(spectra_path=args.spectra, n_simulated=args.n_sim,
                           data_seed=args.data_seed, lr=args.learning_rate)
    cfg = dataclasses.replace(cfg, grad_clip_norm=args.grad_clip,
                              early_stopping_patience=args.patience, max_steps=args.max_steps,
                              run_name=cfg.run_name or task.name)
    out = args.out or f"runs/models/{task.name}"
    config = train_spectral_vae(task, cfg, out, command=shlex.join(["galscale", *sys.argv[1:]]))
    print(json.dumps(config["metrics"], indent=2))
    return out


__all__ = ["BUILDER", "MaskedSpectraDataset", "split_indices", "load_training_spectra",
           "SpectralVAETask", "train_spectral_vae", "add_arguments", "run"]
