"""The report's catalog-level figures, drawn from aggregates (NumPy histograms, bin counts).

Every function takes plain arrays and a PNG path, draws with Matplotlib's Agg backend and
returns the path; nothing here reads files or holds more than the columns it is given, so a
1-million-row catalog costs a few vectorised passes. Spectral pictures reuse
`galscale.spectra.outputs`, the redshift-class confusion matrix and ROC curves reuse
`galscale.evaluate.redshift`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from galscale.config import REDSHIFT_CLASSES

DPI = 90


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | os.PathLike[str]) -> Path:
    """Save and close a figure; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    pyplot().close(fig)
    return out


def plot_pdisk_distribution(p_disk: np.ndarray, clean: np.ndarray,
                            path: str | os.PathLike[str], bins: int = 40) -> Path:
    """Histogram of P(disk) for all scored rows and for unflagged rows (log counts)."""
    plt = pyplot()
    p = np.asarray(p_disk, dtype=float)
    ok = np.isfinite(p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    all_counts, _ = np.histogram(p[ok], bins=edges)
    clean_counts, _ = np.histogram(p[ok & clean], bins=edges)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.stairs(all_counts, edges, fill=True, color="#9ecae1", label=f"all scored ({ok.sum():,})")
    ax.stairs(clean_counts, edges, color="#08519c", lw=1.5,
              label=f"unflagged ({(ok & clean).sum():,})")
    ax.axvline(0.5, color="0.3", ls=":", lw=0.8)
    ax.set_yscale("log" if all_counts.max(initial=0) > 50 else "linear")
    ax.set_xlabel("P(disk)")
    ax.set_ylabel("sources per bin")
    ax.set_title("distribution of P(disk)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    return save(fig, path)


def binned_fraction(z: np.ndarray, is_disk: np.ndarray, edges: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per redshift bin: count, disk fraction and its binomial 1-sigma error (NaN if empty)."""
    n, _ = np.histogram(z, bins=edges)
    k, _ = np.histogram(z[is_disk], bins=edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        err = np.where(n > 0, np.sqrt(frac * (1 - frac) / np.maximum(n, 1)), np.nan)
    return n, frac, err


def redshift_edges(z: np.ndarray, max_bins: int = 12, min_per_bin: int = 5) -> np.ndarray:
    """Bin edges over the finite redshifts: quantiles, so every bin has sources."""
    z = z[np.isfinite(z)]
    n_bins = int(np.clip(len(z) // max(min_per_bin, 1), 1, max_bins))
    edges = np.unique(np.quantile(z, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([z.min() - 0.05, z.max() + 0.05]) if len(z) else np.array([0.0, 1.0])
    return edges


def plot_disk_fraction_vs_redshift(z: np.ndarray, p_disk: np.ndarray,
                                   path: str | os.PathLike[str], source: str,
                                   truth_disk: np.ndarray | None = None) -> Path:
    """Fraction of sources called disk (P(disk) > 0.5) per redshift bin, with the mean
    P(disk), and the true disk fraction when truth is given."""
    plt = pyplot()
    z, p = np.asarray(z, float), np.asarray(p_disk, float)
    ok = np.isfinite(z) & np.isfinite(p)
    edges = redshift_edges(z[ok])
    centre = 0.5 * (edges[:-1] + edges[1:])
    n, frac, err = binned_fraction(z[ok], p[ok] > 0.5, edges)
    sums, _ = np.histogram(z[ok], bins=edges, weights=p[ok])
    mean_p = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.errorbar(centre, frac, yerr=err, xerr=0.5 * np.diff(edges), fmt="o", color="#08519c",
                ms=4, lw=1, label="called disk (P > 0.5)")
    ax.plot(centre, mean_p, "s--", color="#fd8d3c", ms=3, lw=1, label="mean P(disk)")
    if truth_disk is not None:
        _, tfrac, _ = binned_fraction(z[ok], np.asarray(truth_disk, bool)[ok], edges)
        ax.plot(centre, tfrac, "^-", color="#31a354", ms=4, lw=1, label="true disk fraction")
    for c, count in zip(centre, n, strict=True):
        ax.text(c, 1.02, f"{count:,}", ha="center", fontsize=6, color="0.4")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel(f"redshift ({source})")
    ax.set_ylabel("disk fraction")
    ax.set_title(f"disk fraction vs redshift, {ok.sum():,} sources", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save(fig, path)


def class_fractions(probs: np.ndarray) -> dict[str, dict[str, float]]:
    """Per redshift class: fraction of rows whose most probable class it is (argmax) and the
    mean probability (the expected fraction), over rows with finite probabilities."""
    ok = np.isfinite(probs).all(axis=1)
    p = probs[ok]
    n = max(int(ok.sum()), 1)
    top = np.bincount(np.argmax(p, axis=1), minlength=len(REDSHIFT_CLASSES)) if len(p) else \
        np.zeros(len(REDSHIFT_CLASSES))
    mean = p.mean(axis=0) if len(p) else np.full(len(REDSHIFT_CLASSES), np.nan)
    return {c: {"argmax_fraction": float(top[i] / n), "mean_probability": float(mean[i]),
                "argmax_count": int(top[i])} for i, c in enumerate(REDSHIFT_CLASSES)}


def plot_class_fractions(fractions: Mapping[str, Mapping[str, float]], n_scored: int,
                         path: str | os.PathLike[str],
                         truth: Mapping[str, float] | None = None) -> Path:
    """Bar chart of the redshift-class fractions (argmax and mean probability; truth if any)."""
    plt = pyplot()
    names = list(fractions)
    x = np.arange(len(names))
    series = [("most probable class", "argmax_fraction", "#3182bd"),
              ("mean probability", "mean_probability", "#9ecae1")]
    width = 0.8 / (len(series) + (truth is not None))
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for i, (label, key, colour) in enumerate(series):
        vals = [fractions[c][key] for c in names]
        bars = ax.bar(x + (i - 0.5) * width, vals, width, label=label, color=colour)
        ax.bar_label(bars, fmt="%.3f", fontsize=6)
    if truth is not None:
        bars = ax.bar(x + 1.5 * width, [truth.get(c, 0.0) for c in names], width,
                      label="truth (matched)", color="#31a354")
        ax.bar_label(bars, fmt="%.3f", fontsize=6)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction of scored sources")
    ax.set_title(f"redshift-class fractions, {n_scored:,} sources", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def plot_disk_truth(true_disk: np.ndarray, p_disk: np.ndarray,
                    path: str | os.PathLike[str]) -> dict[str, float]:
    """Disk vs non-disk against truth: 2x2 confusion matrix (threshold 0.5) and ROC curve in
    one picture. Returns accuracy, AUC (NaN with one class only) and counts."""
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    plt = pyplot()
    y, p = np.asarray(true_disk, bool), np.asarray(p_disk, float)
    cm = confusion_matrix(y, p > 0.5, labels=[False, True])
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    both = 0 < y.sum() < len(y)
    auc = float(roc_auc_score(y, p)) if both else float("nan")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8.4, 3.6))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.3f}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    labels = ["non-disk", "disk"]
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set_xlabel("predicted (P(disk) > 0.5)")
    ax.set_ylabel("true")
    ax.set_title("disk classifier: confusion matrix", fontsize=10)
    if both:
        fpr, tpr, _ = roc_curve(y, p)
        ax2.plot(fpr, tpr, color="#08519c", label=f"AUC {auc:.3f}")
        ax2.legend(loc="lower right", fontsize=8)
    else:
        ax2.text(0.5, 0.5, "one class only:\nno ROC curve", ha="center", va="center")
    ax2.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax2.set_xlabel("false positive rate")
    ax2.set_ylabel("true positive rate")
    ax2.set_title(f"disk classifier: ROC ({len(y):,} galaxies)", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return {"n": int(len(y)), "accuracy": float(((p > 0.5) == y).mean()) if len(y) else
            float("nan"), "roc_auc": auc, "confusion_matrix": cm.tolist()}


def plot_flag_counts(counts: Mapping[str, int], total: int, path: str | os.PathLike[str]) -> Path:
    """Horizontal bars: rows carrying each flag (a row may carry several)."""
    plt = pyplot()
    names = [k for k, v in sorted(counts.items(), key=lambda kv: kv[1]) if v > 0]
    fig, ax = plt.subplots(figsize=(5.2, 0.8 + 0.28 * max(len(names), 1)))
    if names:
        bars = ax.barh(names, [counts[n] for n in names], color="#fc9272")
        ax.bar_label(bars, labels=[f"{counts[n]:,} ({counts[n] / max(total, 1):.1%})"
                                   for n in names], fontsize=7, padding=2)
        ax.set_xlim(0, max(counts[n] for n in names) * 1.35)
    else:
        ax.text(0.5, 0.5, "no flagged rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("catalog rows with the flag")
    ax.set_title(f"flags among {total:,} catalog rows", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def plot_throughput(per_stage: Mapping[str, float], path: str | os.PathLike[str]) -> Path:
    """Horizontal bars: sources per second of each stage and end to end."""
    plt = pyplot()
    names = list(per_stage)
    fig, ax = plt.subplots(figsize=(5.2, 0.8 + 0.35 * max(len(names), 1)))
    bars = ax.barh(names, [per_stage[n] for n in names], color="#74c476")
    ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xlim(0, max(list(per_stage.values()) + [1e-9]) * 1.25)
    ax.set_xlabel("sources per second")
    ax.set_title("throughput per stage", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def reduce_points(xy: np.ndarray, labels: np.ndarray, max_points: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of at most `max_points` rows (scatter plots of huge catalogs)."""
    if len(xy) <= max_points:
        return xy, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(xy), max_points, replace=False))
    return xy[keep], labels[keep]


def label_counts(values: Sequence[str]) -> dict[str, int]:
    uniq, counts = np.unique(np.asarray(values, dtype=object).astype(str), return_counts=True)
    return {str(u): int(c) for u, c in zip(uniq, counts, strict=True)}


__all__ = [
    "pyplot", "save", "plot_pdisk_distribution", "binned_fraction", "redshift_edges",
    "plot_disk_fraction_vs_redshift", "class_fractions", "plot_class_fractions",
    "plot_disk_truth", "plot_flag_counts", "plot_throughput", "reduce_points", "label_counts",
]
