"""The persisted spectral embedding: VAE encoder + UMAP map + Gaussian mixture, and assignment.

A fitted `SpectralEmbeddingModel` is one folder (a `galscale.registry` artefact plus two
array files):

    model.safetensors, config.json, sha256   the VAE (registry artefact; safetensors only)
    umap.npz                                 FittedUmap arrays (allow_pickle=False)
    mixture.npz                              GaussianMixtureArrays (allow_pickle=False)
    embedding.json                           preprocessing grid, UMAP/mixture settings, chosen k,
                                             silhouette, SHA-256 of both .npz files, provenance

Nothing is unpickled when loading, and every file's hash is checked. `embed_batch` is the
per-batch function Ray Data calls; `assign` is the library form of `galscale assign`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from galscale.models.spectral_vae import SpectralVAE
from galscale.spectra.embedding import FittedUmap, encode_spectra
from galscale.spectra.io import SpectraBatch, batch_from_columns
from galscale.spectra.mixtures import GaussianMixtureArrays
from galscale.spectra.preprocess import (
    FLAG_HIGH_RECON_ERROR,
    PreprocessConfig,
    PreprocessedSpectra,
    flag_reason,
    preprocess_spectra,
)

UMAP_FILE = "umap.npz"
MIXTURE_FILE = "mixture.npz"
EMBEDDING_FILE = "embedding.json"
BUILDER = "galscale.models.spectral_vae:build_spectral_vae"
SHIPPED_NAME = "spectral"


def latent_columns(latent_dim: int) -> list[str]:
    """Catalog column names of the latent vector: latent_00, latent_01, ..."""
    return [f"latent_{i:02d}" for i in range(latent_dim)]


def catalog_columns(
    ids: np.ndarray,
    z: np.ndarray,
    pre: PreprocessedSpectra,
    latent: np.ndarray,
    recon_mse: np.ndarray,
    umap_xy: np.ndarray,
    cluster: np.ndarray,
    prob: np.ndarray,
    extra_flags: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The spectral catalog row layout as a dict of columns (one row per input spectrum).

    `extra_flags` (e.g. FLAG_HIGH_RECON_ERROR set by the embedding) are OR-ed into `pre.flags`.
    """
    flags = pre.flags.astype(np.int32)
    if extra_flags is not None:
        flags = flags | np.asarray(extra_flags, np.int32)
    cols: dict[str, np.ndarray] = {
        "id": np.asarray(ids, np.int64), "redshift": np.asarray(z, np.float64),
    }
    for i, name in enumerate(latent_columns(latent.shape[1])):
        cols[name] = latent[:, i].astype(np.float32)
    cols.update({
        "umap_x": umap_xy[:, 0].astype(np.float32), "umap_y": umap_xy[:, 1].astype(np.float32),
        "cluster": np.asarray(cluster, np.int32), "cluster_prob": np.asarray(prob, np.float32),
        "recon_mse": np.asarray(recon_mse, np.float32), "flags": flags,
        "flag_reason": np.array([flag_reason(int(f)) for f in flags], dtype=str),
    })
    return cols


@dataclass
class SpectralEmbeddingModel:
    """Everything needed to place new spectra on an existing map and in existing clusters."""

    vae: SpectralVAE
    preprocess: PreprocessConfig
    umap: FittedUmap
    mixture: GaussianMixtureArrays
    info: dict[str, Any] = field(default_factory=dict)  # k, silhouette, settings, provenance
    recon_mse_max: float = float("inf")  # above it: FLAG_HIGH_RECON_ERROR, no cluster

    def high_recon_error(self, recon_mse: np.ndarray) -> np.ndarray:
        """True where a usable spectrum's reconstruction MSE exceeds the fitted threshold."""
        mse = np.asarray(recon_mse, np.float64)
        return np.isfinite(mse) & (mse > self.recon_mse_max)

    def embed(self, batch: SpectraBatch) -> dict[str, np.ndarray]:
        """Catalog columns for a batch: preprocess -> encode -> UMAP transform -> mixture."""
        pre = preprocess_spectra(batch.wave, batch.flux, batch.err, batch.z, self.preprocess)
        latent, mse = encode_spectra(self.vae, pre.x, pre.mask)
        xy = self.umap.transform(latent)
        cluster, prob = self.mixture.predict(xy)
        high = self.high_recon_error(mse)
        cluster[high], prob[high] = -1, np.nan
        extra = np.where(high, FLAG_HIGH_RECON_ERROR, 0)
        return catalog_columns(batch.ids, batch.z, pre, latent, mse, xy, cluster, prob, extra)

    def save(self, out_dir: str | os.PathLike[str], training: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None) -> Path:
        """Write the model folder (see module docstring)."""
        from galscale.registry import file_sha256, save_artifact

        out = Path(out_dir)
        architecture = {"n_inputs": self.vae.n_inputs, "latent_dim": self.vae.latent_dim,
                        "hidden": [blk[0].out_features for blk in self.vae.encoder]}
        save_artifact(self.vae, out, name=SHIPPED_NAME, builder=BUILDER,
                      architecture=architecture, training=training or {},
                      metrics=metrics or {})
        self.umap.save(out / UMAP_FILE)
        self.mixture.save(out / MIXTURE_FILE)
        info = dict(self.info)
        info.update({
            "preprocess": asdict(self.preprocess),
            "umap": {"n_neighbors": self.umap.n_neighbors, "min_dist": self.umap.min_dist,
                     "random_state": self.umap.random_state, "backend": self.umap.backend,
                     "n_train": int(self.umap.train_data.shape[0])},
            "k": self.mixture.k,
            "recon_mse_max": (self.recon_mse_max if np.isfinite(self.recon_mse_max) else None),
            "sha256": {UMAP_FILE: file_sha256(out / UMAP_FILE),
                       MIXTURE_FILE: file_sha256(out / MIXTURE_FILE)},
        })
        (out / EMBEDDING_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def load(cls, path_or_name: str | os.PathLike[str] = SHIPPED_NAME,
             device: str | torch.device = "cpu") -> SpectralEmbeddingModel:
        """Load a model folder (or the shipped one by name), checking every file's SHA-256."""
        from galscale.registry import ArtifactError, file_sha256, load_model, resolve_artifact_path

        path = resolve_artifact_path(path_or_name)
        info_file = path / EMBEDDING_FILE
        if not info_file.is_file():
            raise ArtifactError(f"{path} is a model artefact but not a spectral embedding "
                                f"(no {EMBEDDING_FILE})")
        info = json.loads(info_file.read_text())
        for fname in (UMAP_FILE, MIXTURE_FILE):
            expected = info.get("sha256", {}).get(fname)
            if not (path / fname).is_file():
                raise ArtifactError(f"{path} lacks {fname}")
            if expected != file_sha256(path / fname):
                raise ArtifactError(f"{path / fname} does not match the SHA-256 in {EMBEDDING_FILE}")
        vae = load_model(path, device=device)
        if not isinstance(vae, SpectralVAE):
            raise ArtifactError(f"{path} does not hold a SpectralVAE")
        return cls(vae=vae, preprocess=PreprocessConfig(**info["preprocess"]),
                   umap=FittedUmap.load(path / UMAP_FILE),
                   mixture=GaussianMixtureArrays.load(path / MIXTURE_FILE), info=info,
                   recon_mse_max=float(info.get("recon_mse_max") or np.inf))


def embed_batch(
    batch: dict[str, np.ndarray] | pa.Table, model: SpectralEmbeddingModel
) -> dict[str, np.ndarray]:
    """Ray Data `map_batches` function: spectra-table columns in, spectral-catalog columns out.

    Input columns: id, z, wave, flux, err (the `galscale.spectra.io` schema). Every input row
    gives one output row; unusable spectra keep their row with cluster -1 and a flag_reason.
    """
    return model.embed(batch_from_columns(batch))


class SpectralEmbedder:
    """Callable class for Ray Data actor pools: loads the model once per actor, then embeds.

        ds.map_batches(SpectralEmbedder, fn_constructor_kwargs={"model": "spectral"},
                       batch_size=4096, batch_format="pyarrow", concurrency=4)
    """

    def __init__(self, model: str | os.PathLike[str] = SHIPPED_NAME, device: str = "cpu",
                 num_threads: int = 1) -> None:
        torch.set_num_threads(num_threads)
        self.model = SpectralEmbeddingModel.load(model, device=device)

    def __call__(self, batch: dict[str, np.ndarray] | pa.Table) -> dict[str, np.ndarray]:
        return embed_batch(batch, self.model)


def assign(
    model: SpectralEmbeddingModel, spectra: SpectraBatch
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster (int32, -1 when flagged) and its posterior probability for each spectrum."""
    cols = model.embed(spectra)
    return cols["cluster"], cols["cluster_prob"]


__all__ = [
    "UMAP_FILE", "MIXTURE_FILE", "EMBEDDING_FILE", "SHIPPED_NAME", "latent_columns",
    "catalog_columns", "SpectralEmbeddingModel", "embed_batch", "SpectralEmbedder", "assign",
]
