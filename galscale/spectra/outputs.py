"""Products of a spectral embedding: catalog Parquet, per-cluster median spectra, pictures.

Pictures follow seed 003's Figure 2: median rest-frame spectra per cluster (offset vertically,
main emission lines marked) and the redshift distribution per cluster; plus the UMAP map
coloured by cluster. Matplotlib runs with the non-interactive Agg backend.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Lines marked on the median-spectra picture (rest Angstrom).
MARKED_LINES: dict[str, float] = {
    r"Ly$\alpha$": 1215.67, "CIV": 1549.0, "CIII]": 1908.7, "[OII]": 3728.5,
    r"H$\beta$": 4862.7, "[OIII]": 5008.2, r"H$\alpha$": 6564.6,
}


def write_catalog(columns: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write the spectral catalog columns as one Parquet file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out)
    return out


def cluster_median_spectra(
    x: np.ndarray, mask: np.ndarray, cluster: np.ndarray, grid: np.ndarray
) -> pa.Table:
    """Median of the preprocessed (arcsinh, normalised) spectra per cluster, over measured points.

    Columns: cluster, n_spectra, wave_rest (list), median (list, NaN where nothing measured),
    coverage (list: fraction of the cluster's spectra measured at each grid point).
    """
    rows = {"cluster": [], "n_spectra": [], "wave_rest": [], "median": [], "coverage": []}
    for k in sorted(int(c) for c in np.unique(cluster) if c >= 0):
        sel = cluster == k
        vals = np.where(mask[sel], x[sel], np.nan)
        cover = mask[sel].mean(axis=0)
        with np.errstate(all="ignore"):
            med = np.where(cover > 0, np.nanmedian(np.where(cover > 0, vals, 0.0), axis=0), np.nan)
        rows["cluster"].append(k)
        rows["n_spectra"].append(int(sel.sum()))
        rows["wave_rest"].append(grid.astype(np.float64))
        rows["median"].append(med.astype(np.float64))
        rows["coverage"].append(cover.astype(np.float64))
    return pa.table({
        "cluster": pa.array(rows["cluster"], pa.int32()),
        "n_spectra": pa.array(rows["n_spectra"], pa.int64()),
        "wave_rest": pa.array(rows["wave_rest"], pa.list_(pa.float64())),
        "median": pa.array(rows["median"], pa.list_(pa.float64())),
        "coverage": pa.array(rows["coverage"], pa.list_(pa.float64())),
    })


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(k: int) -> list:
    import matplotlib

    name, size = ("tab10", 10) if k <= 10 else ("tab20", 20)
    cmap = matplotlib.colormaps[name]
    return [cmap(i % size) for i in range(k)]


def plot_cluster_medians(medians: pa.Table, path: str | os.PathLike[str],
                         min_coverage: float = 0.2) -> Path:
    """Median spectra per cluster, offset vertically, main emission lines marked."""
    plt = _pyplot()
    clusters = medians.column("cluster").to_pylist()
    n = len(clusters)
    colours = _colours(max(n, 1))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.75 * n))
    for i, k in enumerate(clusters):
        wave = np.asarray(medians.column("wave_rest")[i].as_py())
        med = np.asarray(medians.column("median")[i].as_py(), dtype=float)
        cov = np.asarray(medians.column("coverage")[i].as_py(), dtype=float)
        med = np.where(cov >= min_coverage, med, np.nan)
        offset = 2.5 * i
        ax.plot(wave, med + offset, color=colours[i], lw=0.8)
        ax.text(wave[-1] * 1.005, offset + 0.5, f"{k} (n={medians.column('n_spectra')[i]})",
                fontsize=7, va="center", color=colours[i])
    for name, lam in MARKED_LINES.items():
        ax.axvline(lam, color="0.6", lw=0.5, ls=":")
        ax.text(lam, 2.5 * max(n, 1) + 1.0, name, fontsize=7, ha="center", rotation=90)
    ax.set_xscale("log")
    ax.set_xlabel("rest-frame wavelength [$\\AA$]")
    ax.set_ylabel("arcsinh(f$_\\nu$ / f$_\\nu$(1500 $\\AA$)) + offset")
    ax.set_title("median spectrum per cluster", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_redshift_distributions(redshift: np.ndarray, cluster: np.ndarray,
                                path: str | os.PathLike[str]) -> Path:
    """Histogram of redshift per cluster (one row per cluster, shared axis)."""
    plt = _pyplot()
    ks = sorted(int(c) for c in np.unique(cluster) if c >= 0)
    colours = _colours(max(len(ks), 1))
    fig, axes = plt.subplots(len(ks), 1, figsize=(5, 0.6 + 0.55 * len(ks)), sharex=True,
                             squeeze=False)
    ok = np.isfinite(redshift)
    bins = np.linspace(np.nanmin(redshift[ok]), np.nanmax(redshift[ok]), 30) if ok.any() else 10
    for ax, k, c in zip(axes[:, 0], ks, colours, strict=True):
        sel = (cluster == k) & ok
        ax.hist(redshift[sel], bins=bins, color=c)
        ax.set_yticks([])
        ax.text(0.99, 0.6, f"cluster {k}, median z={np.median(redshift[sel]):.2f}",
                transform=ax.transAxes, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("redshift")
    fig.suptitle("redshift distribution per cluster", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_umap_map(umap_xy: np.ndarray, cluster: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """The 2-D UMAP map, one colour per cluster (flagged rows are not drawn)."""
    plt = _pyplot()
    ks = sorted(int(c) for c in np.unique(cluster) if c >= 0)
    colours = _colours(max(len(ks), 1))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for k, c in zip(ks, colours, strict=True):
        sel = cluster == k
        ax.scatter(umap_xy[sel, 0], umap_xy[sel, 1], s=2, color=c, label=str(k), rasterized=True)
        ax.text(*np.median(umap_xy[sel], axis=0), str(k), fontsize=8, weight="bold")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title("UMAP of the 16-D VAE latent space, coloured by cluster", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def write_embedding_products(
    out_dir: str | os.PathLike[str],
    catalog: dict[str, np.ndarray],
    x: np.ndarray,
    mask: np.ndarray,
    grid: np.ndarray,
    picture_prefix: str = "spectra_",
) -> dict[str, str]:
    """Catalog, median spectra (Parquet) and the three pictures; returns their paths."""
    out = Path(out_dir)
    cluster = np.asarray(catalog["cluster"])
    xy = np.stack([catalog["umap_x"], catalog["umap_y"]], axis=1)
    medians = cluster_median_spectra(x, mask, cluster, grid)
    paths = {
        "catalog": write_catalog(catalog, out / "spectral_catalog.parquet"),
        "median_spectra": out / "cluster_median_spectra.parquet",
        "median_picture": plot_cluster_medians(medians, out / f"{picture_prefix}medians.png"),
        "redshift_picture": plot_redshift_distributions(
            np.asarray(catalog["redshift"]), cluster, out / f"{picture_prefix}redshifts.png"),
        "umap_picture": plot_umap_map(xy, cluster, out / f"{picture_prefix}umap.png"),
    }
    pq.write_table(medians, paths["median_spectra"])
    return {k: str(v) for k, v in paths.items()}


__all__ = [
    "MARKED_LINES", "write_catalog", "cluster_median_spectra", "plot_cluster_medians",
    "plot_redshift_distributions", "plot_umap_map", "write_embedding_products",
]
