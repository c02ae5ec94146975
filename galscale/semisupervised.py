"""Semi-supervised redshift-class branch (seed 002, section 4).

From each source's seven magnitudes and its flux radius: a 2-D embedding (t-SNE as in the
paper, or UMAP), HDBSCAN clusters in that plane, then a random forest trained on the cluster
labels (so new sources can be assigned to a cluster without re-running the embedding). We report
the silhouette score of the clusters and how they line up with the redshift classes.

Photometry is measured on the cutouts with the same central-source segmentation as the CNN
(`galscale.models.redshift.central_footprints`), so survey cutouts and simulated stamps are
treated alike. Magnitudes are asinh magnitudes (Lupton et al. 1999), finite for faint and
negative fluxes, which is where dropouts live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from galscale.config import NJY_ZEROPOINT_AB, REDSHIFT_CLASSES
from galscale.models.redshift import central_footprints, footprint_photometry


@dataclass(frozen=True)
class CutoutPhotometry:
    """Footprint photometry of a batch of cutouts."""

    mags: np.ndarray  # float64 [N, B] asinh AB magnitudes (NaN for missing bands)
    flux: np.ndarray  # float64 [N, B] footprint flux (input units)
    flux_err: np.ndarray  # float64 [N, B]
    flux_radius: np.ndarray  # float64 [N] half-light radius in pixels (all bands summed)
    found: np.ndarray  # bool [N] central source detected (else aperture fallback)


def asinh_magnitude(flux: np.ndarray, softening: np.ndarray, zeropoint: float) -> np.ndarray:
    """Lupton asinh magnitude: ~ zp - 2.5 log10(flux) when bright, finite at flux <= 0."""
    b = np.asarray(softening, dtype=np.float64)
    return zeropoint - 2.5 / np.log(10.0) * (np.arcsinh(flux / (2.0 * b)) + np.log(b))


def cutout_photometry(
    flux: np.ndarray, err: np.ndarray, zeropoint: float = NJY_ZEROPOINT_AB
) -> CutoutPhotometry:
    """Magnitudes and half-light radius of the central source of each cutout ([N,B,H,W])."""
    f, masks, found, missing = central_footprints(flux, err)
    ftot, ferr = footprint_photometry(f, masks, err)
    soft = 1.042 * np.where(ferr > 0, ferr, 1.0)
    mags = asinh_magnitude(ftot, soft, zeropoint)
    mags[missing] = np.nan
    size = f.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    r = np.hypot(yy - c, xx - c).ravel()
    order = np.argsort(r, kind="stable")
    radius = np.zeros(len(f))
    for i in range(len(f)):
        img = np.clip((f[i] * masks[i][None]).sum(axis=0), 0, None).ravel()[order]
        total = img.sum()
        if total <= 0:
            radius[i] = np.nan
            continue
        cum = np.cumsum(img)
        radius[i] = float(np.interp(0.5 * total, cum, r[order]))
    return CutoutPhotometry(mags=mags, flux=ftot, flux_err=ferr, flux_radius=radius, found=found)


def photometric_features(mags: np.ndarray, flux_radius: np.ndarray) -> np.ndarray:
    """Standardised feature matrix [N, B+1]: magnitudes and log10 flux radius. Missing values
    (missing bands, no radius) are set to the column median before standardising."""
    x = np.column_stack([np.asarray(mags, dtype=np.float64),
                         np.log10(np.clip(np.asarray(flux_radius, dtype=np.float64), 0.1, None))])
    med = np.nanmedian(x, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    x = np.where(np.isfinite(x), x, med)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


@dataclass
class SemiSupervisedResult:
    """Embedding, clusters, random forest and their agreement with the redshift classes."""

    embedding: np.ndarray  # [N, 2]
    clusters: np.ndarray  # int [N], -1 = HDBSCAN noise
    silhouette: float  # on the 2-D embedding, noise points excluded (NaN if < 2 clusters)
    n_clusters: int
    noise_fraction: float
    forest: Any  # sklearn RandomForestClassifier trained on the cluster labels
    forest_cluster_accuracy: float  # on a held-out 30 % split of the clustered points
    cluster_to_class: dict[int, int] = field(default_factory=dict)  # majority class per cluster
    contingency: np.ndarray | None = None  # [n_clusters + 1 (noise first), n_classes]
    class_confusion: np.ndarray | None = None  # true class x (forest cluster -> majority class)
    median_redshift: dict[int, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures."""
        out: dict[str, Any] = {
            "silhouette": None if np.isnan(self.silhouette) else round(float(self.silhouette), 4),
            "n_clusters": self.n_clusters,
            "noise_fraction": round(self.noise_fraction, 4),
            "forest_cluster_accuracy": round(self.forest_cluster_accuracy, 4),
            "cluster_to_class": {str(k): REDSHIFT_CLASSES[v] for k, v in self.cluster_to_class.items()},
            "median_redshift_per_cluster": {str(k): round(v, 3) for k, v in self.median_redshift.items()},
        }
        if self.contingency is not None:
            out["contingency_rows"] = ["noise"] + [str(k) for k in range(self.n_clusters)]
            out["contingency_columns"] = list(REDSHIFT_CLASSES)
            out["contingency"] = self.contingency.tolist()
        if self.class_confusion is not None:
            out["class_confusion"] = self.class_confusion.tolist()
            diag = np.diag(self.class_confusion).sum()
            out["class_accuracy_via_clusters"] = round(float(diag / max(self.class_confusion.sum(), 1)), 4)
        return out


def embed_2d(x: np.ndarray, method: str = "tsne", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D embedding of a feature matrix: t-SNE (sklearn) or UMAP (umap-learn)."""
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = min(perplexity, max(5.0, (len(x) - 1) / 3.0))
        return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(x)
    raise ValueError(f"embedding method must be 'tsne' or 'umap', not {method!r}")


def semisupervised_clusters(
    mags: np.ndarray,
    flux_radius: np.ndarray,
    labels: np.ndarray | None = None,
    redshift: np.ndarray | None = None,
    *,
    method: str = "tsne",
    min_cluster_size: int | None = None,
    seed: int = 0,
) -> SemiSupervisedResult:
    """Embed, cluster with HDBSCAN, train a random forest on the cluster labels; with `labels`
    (redshift class per source) also measure how the clusters line up with the classes."""
    from sklearn.cluster import HDBSCAN
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import confusion_matrix, silhouette_score
    from sklearn.model_selection import train_test_split

    x = photometric_features(mags, flux_radius)
    if len(x) < 20:
        raise ValueError(f"need at least 20 sources for the semi-supervised branch, got {len(x)}")
    emb = embed_2d(x, method, seed)
    mcs = min_cluster_size or max(10, len(x) // 40)
    clusters = HDBSCAN(min_cluster_size=mcs).fit_predict(emb)
    ids = np.unique(clusters[clusters >= 0])
    n_clusters = int(ids.size)
    clustered = clusters >= 0
    sil = float("nan")
    if n_clusters >= 2:
        sil = float(silhouette_score(emb[clustered], clusters[clustered]))
    forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    rf_acc = float("nan")
    if n_clusters >= 1 and clustered.sum() >= 10:
        xc, yc = x[clustered], clusters[clustered]
        strat = yc if np.bincount(yc).min() >= 2 and n_clusters >= 2 else None
        xtr, xte, ytr, yte = train_test_split(xc, yc, test_size=0.3, random_state=seed, stratify=strat)
        forest.fit(xtr, ytr)
        rf_acc = float((forest.predict(xte) == yte).mean())
        forest.fit(xc, yc)  # final forest on every clustered source
    result = SemiSupervisedResult(
        embedding=emb, clusters=clusters, silhouette=sil, n_clusters=n_clusters,
        noise_fraction=float((~clustered).mean()), forest=forest, forest_cluster_accuracy=rf_acc,
    )
    if labels is not None and n_clusters >= 1:
        labels = np.asarray(labels)
        k = len(REDSHIFT_CLASSES)
        rows = np.concatenate([[-1], ids])
        result.contingency = np.array(
            [np.bincount(labels[clusters == cid], minlength=k) for cid in rows], dtype=np.int64
        )
        result.cluster_to_class = {int(cid): int(np.argmax(result.contingency[j + 1]))
                                   for j, cid in enumerate(ids)}
        pred_cluster = forest.predict(x)
        pred_class = np.array([result.cluster_to_class[int(c)] for c in pred_cluster])
        result.class_confusion = confusion_matrix(labels, pred_class, labels=list(range(k)))
    if redshift is not None:
        z = np.asarray(redshift, dtype=np.float64)
        result.median_redshift = {int(c): float(np.nanmedian(z[clusters == c])) for c in ids}
    return result


__all__ = [
    "CutoutPhotometry", "asinh_magnitude", "cutout_photometry", "photometric_features",
    "SemiSupervisedResult", "embed_2d", "semisupervised_clusters",
]
