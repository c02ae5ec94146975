"""Gaussian-mixture clusters on the 2-D UMAP map, chosen by silhouette (seed 003, sec. 3.2).

For every k in [k_min, k_max] and every restart, a full-covariance mixture is fitted with its
own seed; the solution with the highest silhouette score (computed on a fixed random sample
when N is large, since silhouette is O(N^2)) wins. The winner is kept as plain arrays
(`GaussianMixtureArrays`: weights, means, covariances) in an `.npz`; `predict` evaluates the
posterior in NumPy, so assignment needs neither scikit-learn objects nor pickle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class GaussianMixtureArrays:
    """A fitted full-covariance Gaussian mixture as arrays."""

    weights: np.ndarray  # [k]
    means: np.ndarray  # [k, d]
    covariances: np.ndarray  # [k, d, d]

    @property
    def k(self) -> int:
        return int(self.weights.size)

    def log_resp(self, points: np.ndarray) -> np.ndarray:
        """Log posterior responsibilities [N, k] (rows with NaN stay NaN)."""
        x = np.asarray(points, dtype=np.float64)
        d = x.shape[1]
        chol = np.linalg.cholesky(self.covariances)  # [k, d, d]
        diff = x[:, None, :] - self.means[None, :, :]  # [N, k, d]
        sol = np.linalg.solve(chol[None], diff[..., None])[..., 0]  # L^-1 (x - mu)
        maha = (sol**2).sum(axis=-1)
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        log_p = -0.5 * (maha + log_det[None] + d * np.log(2 * np.pi)) + np.log(self.weights)[None]
        m = log_p.max(axis=1, keepdims=True)
        return log_p - (m + np.log(np.exp(log_p - m).sum(axis=1, keepdims=True)))

    def predict(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster int32 [N], probability float64 [N]); -1 and NaN for non-finite rows."""
        x = np.asarray(points, dtype=np.float64)
        ok = np.isfinite(x).all(axis=1)
        cluster = np.full(x.shape[0], -1, dtype=np.int32)
        prob = np.full(x.shape[0], np.nan)
        if ok.any():
            resp = np.exp(self.log_resp(x[ok]))
            cluster[ok] = resp.argmax(axis=1)
            prob[ok] = resp.max(axis=1)
        return cluster, prob

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        np.savez(out, weights=self.weights, means=self.means, covariances=self.covariances)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GaussianMixtureArrays:
        with np.load(path, allow_pickle=False) as f:
            return cls(weights=f["weights"], means=f["means"], covariances=f["covariances"])


@dataclass
class MixtureSelection:
    """The chosen mixture and the silhouette of every (k, restart) tried."""

    mixture: GaussianMixtureArrays
    k: int
    silhouette: float
    scores: dict[int, list[float]] = field(default_factory=dict)  # k -> silhouette per restart

    def summary(self) -> dict:
        return {"k": self.k, "silhouette": self.silhouette,
                "best_silhouette_per_k": {str(k): max(v) for k, v in self.scores.items()}}


def select_mixture(
    points: np.ndarray,
    k_range: tuple[int, int] = (5, 15),
    n_restarts: int = 5,
    seed: int = 0,
    silhouette_sample: int = 5000,
    fit_sample: int = 200_000,
) -> MixtureSelection:
    """Fit mixtures for k in `k_range` (inclusive) x `n_restarts` seeds; keep the best silhouette.

    Mixtures are fitted on at most `fit_sample` points and scored on at most `silhouette_sample`
    (both fixed random subsets drawn from `seed`), so the cost stops growing with N.
    """
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    x = np.asarray(points, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("mixture input contains NaN/inf (drop flagged rows first)")
    k_lo, k_hi = k_range
    if not 2 <= k_lo <= k_hi:
        raise ValueError(f"k_range must satisfy 2 <= k_min <= k_max, got {k_range}")
    if x.shape[0] <= k_hi:
        raise ValueError(f"need more than k_max={k_hi} points, got {x.shape[0]}")
    rng = np.random.default_rng(seed)
    fit_x = x[rng.choice(x.shape[0], fit_sample, replace=False)] if x.shape[0] > fit_sample else x
    sil_x = (fit_x[rng.choice(fit_x.shape[0], silhouette_sample, replace=False)]
             if fit_x.shape[0] > silhouette_sample else fit_x)
    best: tuple[float, int, GaussianMixture] | None = None
    scores: dict[int, list[float]] = {}
    for k in range(k_lo, k_hi + 1):
        scores[k] = []
        for r in range(n_restarts):
            gm = GaussianMixture(n_components=k, covariance_type="full", n_init=1,
                                 random_state=seed * 1000 + k * 100 + r, reg_covar=1e-6)
            gm.fit(fit_x)
            labels = gm.predict(sil_x)
            score = (float(silhouette_score(sil_x, labels))
                     if np.unique(labels).size > 1 else -1.0)
            scores[k].append(score)
            if best is None or score > best[0]:
                best = (score, k, gm)
    assert best is not None
    score, k, gm = best
    mixture = GaussianMixtureArrays(
        weights=gm.weights_.copy(), means=gm.means_.copy(), covariances=gm.covariances_.copy()
    )
    return MixtureSelection(mixture=mixture, k=k, silhouette=score, scores=scores)


__all__ = ["GaussianMixtureArrays", "MixtureSelection", "select_mixture"]
