"""Latent encoding and the 2-D UMAP map, with a persisted, pickle-free UMAP transform.

`make_umap()` picks the backend: cuML (RAPIDS, GPU) when a CUDA device and `cuml` are
present, umap-learn otherwise; `backend="cuml"` / `"umap-learn"` (or the environment variable
GALSCALE_UMAP_BACKEND) forces one. Both fit on a sample (`fit_umap_on_sample`, default up to
100,000 points) and return a `FittedUmap`: plain arrays (the sample's 16-D latents, its 2-D
embedding, the curve parameters a, b and the UMAP settings). `FittedUmap.transform` places
new points exactly as umap-learn's `transform` starts: the fuzzy-simplicial membership
weights of each new point's k nearest training points (umap-learn's own `smooth_knn_dist`
and `compute_membership_strengths`) and the membership-weighted mean of their embeddings
(a point identical to a training point keeps that point's fitted coordinates).
It is a pure function of one point and the fitted arrays, so any batch split, any worker and
any order give identical coordinates, and it persists as an `.npz` loaded with
`allow_pickle=False` (no pickle, no joblib).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galscale.models.spectral_vae import SpectralVAE

UMAP_BACKENDS = ("umap-learn", "cuml")
DEFAULT_UMAP_SAMPLE = 100_000


@torch.no_grad()
def encode_spectra(
    model: SpectralVAE, x: np.ndarray, mask: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Latent means (float32 [N, latent]) and masked reconstruction MSE (float64 [N]).

    Rows whose mask is all False (flagged spectra) get NaN latents and NaN MSE.
    """
    model.eval()
    n = x.shape[0]
    latent = np.full((n, model.latent_dim), np.nan, dtype=np.float32)
    mse = np.full(n, np.nan, dtype=np.float64)
    usable = np.flatnonzero(mask.any(axis=1))
    device = next(model.parameters()).device
    for start in range(0, usable.size, batch_size):
        rows = usable[start : start + batch_size]
        xb = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)).to(device)
        mb = torch.from_numpy(np.ascontiguousarray(mask[rows])).to(device)
        mu, _ = model.encode(xb)
        recon = model.decode(mu)
        m = mb.to(xb.dtype)
        err = ((recon - xb) ** 2 * m).sum(dim=1) / m.sum(dim=1)
        latent[rows] = mu.cpu().numpy()
        mse[rows] = err.double().cpu().numpy()
    return latent, mse


def gpu_umap_available() -> bool:
    """True when cuML can be imported and a CUDA device is visible."""
    try:
        import cuml  # noqa: F401
    except Exception:  # ImportError, or CUDA initialisation errors
        return False
    return bool(torch.cuda.is_available())


def choose_umap_backend(backend: str = "auto") -> str:
    """Resolve 'auto' (or GALSCALE_UMAP_BACKEND) to an installed backend name."""
    choice = os.environ.get("GALSCALE_UMAP_BACKEND", backend) if backend == "auto" else backend
    if choice == "auto":
        return "cuml" if gpu_umap_available() else "umap-learn"
    if choice not in UMAP_BACKENDS:
        raise ValueError(f"unknown UMAP backend {choice!r}; choose auto, {', '.join(UMAP_BACKENDS)}")
    if choice == "cuml" and not gpu_umap_available():
        raise RuntimeError("UMAP backend 'cuml' forced, but cuML or a CUDA device is missing")
    return choice


@dataclass
class FittedUmap:
    """Everything `transform` needs, as arrays: safe to persist and to ship to Ray workers."""

    train_data: np.ndarray  # float32 [n, d]: the latents UMAP was fitted on
    embedding: np.ndarray  # float32 [n, 2]: their fitted 2-D coordinates
    a: float
    b: float
    n_neighbors: int
    min_dist: float
    random_state: int
    backend: str
    local_connectivity: float = 1.0

    def __post_init__(self) -> None:
        self._nn: Any = None

    def _neighbours(self) -> Any:
        if self._nn is None:
            from sklearn.neighbors import NearestNeighbors

            self._nn = NearestNeighbors(n_neighbors=self.n_neighbors).fit(self.train_data)
        return self._nn

    def transform(self, latents: np.ndarray) -> np.ndarray:
        """2-D coordinates of new latents (NaN rows stay NaN). Batch-independent."""
        from umap.umap_ import compute_membership_strengths, smooth_knn_dist

        x = np.asarray(latents, dtype=np.float32)
        out = np.full((x.shape[0], self.embedding.shape[1]), np.nan, dtype=np.float32)
        ok = np.isfinite(x).all(axis=1)
        if not ok.any():
            return out
        dists, idx = self._neighbours().kneighbors(x[ok])
        dists = dists.astype(np.float32)
        sigmas, rhos = smooth_knn_dist(
            dists, float(self.n_neighbors),
            local_connectivity=float(max(0.0, self.local_connectivity - 1.0)),
        )
        _, _, vals, _ = compute_membership_strengths(
            idx.astype(np.int32), dists, sigmas, rhos, bipartite=True
        )
        w = vals.reshape(idx.shape).astype(np.float64)
        w_sum = w.sum(axis=1, keepdims=True)
        w = np.where(w_sum > 0, w / np.where(w_sum > 0, w_sum, 1.0), 1.0 / idx.shape[1])
        xy = np.einsum("nk,nkd->nd", w, self.embedding[idx].astype(np.float64))
        # A point the map was fitted on keeps its fitted position (else re-assigning a training
        # spectrum could move it off its own cluster).
        same = (self.train_data[idx] == x[ok][:, None, :]).all(axis=2)  # [n, k]
        exact = same.any(axis=1)
        xy[exact] = self.embedding[idx[exact, same[exact].argmax(axis=1)]]
        out[ok] = xy
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as .npz (arrays and scalars only; loaded with allow_pickle=False)."""
        out = Path(path)
        np.savez_compressed(
            out, train_data=self.train_data, embedding=self.embedding,
            scalars=np.array([self.a, self.b, self.n_neighbors, self.min_dist,
                              self.random_state, self.local_connectivity], dtype=np.float64),
            backend=np.array(self.backend),
        )
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FittedUmap:
        with np.load(path, allow_pickle=False) as f:
            a, b, k, min_dist, rs, lc = f["scalars"].tolist()
            return cls(
                train_data=f["train_data"], embedding=f["embedding"], a=a, b=b,
                n_neighbors=int(k), min_dist=min_dist, random_state=int(rs),
                backend=str(f["backend"]), local_connectivity=lc,
            )


@dataclass(frozen=True)
class UmapSettings:
    """UMAP settings shared by both backends."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    n_components: int = 2
    random_state: int = 0
    backend: str = "auto"


class UmapFitter:
    """Fits UMAP with the chosen backend and returns a `FittedUmap`."""

    def __init__(self, settings: UmapSettings) -> None:
        self.settings = settings
        self.backend = choose_umap_backend(settings.backend)

    def fit(self, latents: np.ndarray) -> FittedUmap:
        s = self.settings
        x = np.ascontiguousarray(latents, dtype=np.float32)
        if x.shape[0] <= s.n_neighbors:
            raise ValueError(f"UMAP needs more than n_neighbors={s.n_neighbors} points, got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise ValueError("UMAP fit input contains NaN/inf (drop flagged rows first)")
        if self.backend == "cuml":
            import cuml

            model = cuml.UMAP(n_neighbors=s.n_neighbors, min_dist=s.min_dist,
                              n_components=s.n_components, random_state=s.random_state)
            embedding = np.asarray(model.fit_transform(x), dtype=np.float32)
            from umap.umap_ import find_ab_params

            a, b = find_ab_params(1.0, s.min_dist)
        else:
            import umap

            model = umap.UMAP(n_neighbors=s.n_neighbors, min_dist=s.min_dist,
                              n_components=s.n_components, random_state=s.random_state)
            embedding = np.asarray(model.fit_transform(x), dtype=np.float32)
            a, b = float(model._a), float(model._b)
        return FittedUmap(
            train_data=x, embedding=embedding, a=float(a), b=float(b), n_neighbors=s.n_neighbors,
            min_dist=s.min_dist, random_state=s.random_state, backend=self.backend,
        )


def make_umap(
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int = 0,
    backend: str = "auto",
) -> UmapFitter:
    """A UMAP fitter on the best available backend ('auto', 'cuml' or 'umap-learn')."""
    return UmapFitter(UmapSettings(n_neighbors=n_neighbors, min_dist=min_dist,
                                   random_state=random_state, backend=backend))


def fit_umap_on_sample(
    latents: np.ndarray,
    fitter: UmapFitter | None = None,
    sample_size: int = DEFAULT_UMAP_SAMPLE,
    seed: int = 0,
) -> tuple[FittedUmap, np.ndarray]:
    """Fit UMAP on at most `sample_size` rows (chosen with `seed`); returns (fit, sample rows).

    Transform the remaining rows in batches with `umap_transform_batch` / `FittedUmap.transform`.
    """
    fitter = fitter or make_umap()
    n = latents.shape[0]
    if n > sample_size:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))
    else:
        rows = np.arange(n)
    return fitter.fit(latents[rows]), rows


def umap_transform_batch(
    batch: dict[str, np.ndarray], fitted: FittedUmap, latent_prefix: str = "latent_"
) -> dict[str, np.ndarray]:
    """Ray Data `map_batches` helper: add `umap_x`, `umap_y` from `latent_00..` columns."""
    keys = sorted(k for k in batch if k.startswith(latent_prefix))
    if not keys:
        raise KeyError(f"batch has no {latent_prefix}* columns (has {sorted(batch)})")
    xy = fitted.transform(np.stack([np.asarray(batch[k], np.float32) for k in keys], axis=1))
    return {**batch, "umap_x": xy[:, 0], "umap_y": xy[:, 1]}


__all__ = [
    "UMAP_BACKENDS", "DEFAULT_UMAP_SAMPLE", "encode_spectra", "gpu_umap_available",
    "choose_umap_backend", "FittedUmap", "UmapSettings", "UmapFitter", "make_umap",
    "fit_umap_on_sample", "umap_transform_batch",
]
