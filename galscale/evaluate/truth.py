"""Compare a survey catalog with a simulation's truth: completeness and classification accuracy.

Catalog rows are matched to truth sources by pixel position (nearest within `radius_px`), the
way a survey would cross-match. Used by `galscale demo`, the survey-job tests and the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from scipy.spatial import cKDTree

from galscale.config import REDSHIFT_CLASSES, RESOLVED_MIN_RADIUS_ARCSEC, RESOLVED_MIN_SNR

# The truth columns `match_to_truth` reads: the light centroid where the simulator wrote it,
# else the profile centre.
LIGHT_CENTROID_COLUMNS = ("x_light", "y_light")
PROFILE_CENTRE_COLUMNS = ("x", "y")
TRUTH_POSITION_COLUMNS = LIGHT_CENTROID_COLUMNS + PROFILE_CENTRE_COLUMNS


def match_to_truth(catalog: pa.Table, truth: pa.Table, radius_px: float = 2.0) -> np.ndarray:
    """Index into `truth` of each catalog row's nearest truth source, -1 beyond `radius_px`.

    Uses the truth light centroid (`x_light`, `y_light`) when the simulator wrote it: for
    mergers and clumpy galaxies the profile centre is not where the light is.
    """
    if catalog.num_rows == 0 or truth.num_rows == 0:
        return np.full(catalog.num_rows, -1, dtype=np.int64)
    xcol, ycol = (LIGHT_CENTROID_COLUMNS if set(LIGHT_CENTROID_COLUMNS) <= set(truth.column_names)
                  else PROFILE_CENTRE_COLUMNS)
    tree = cKDTree(np.column_stack([np.asarray(truth[xcol]), np.asarray(truth[ycol])]))
    dist, index = tree.query(np.column_stack([np.asarray(catalog["x"]), np.asarray(catalog["y"])]))
    return np.where(dist <= radius_px, index, -1).astype(np.int64)


def bright_truth(truth: pa.Table, min_snr: float = 10.0) -> np.ndarray:
    """Truth sources with detection S/N above `min_snr`: the simulator's `snr_det` (S/N in the
    detection aperture of the noiseless source), else F277W brighter than 27 AB."""
    if "snr_det" in truth.column_names:
        return np.nan_to_num(np.asarray(truth["snr_det"], dtype=float)) > min_snr
    return np.nan_to_num(np.asarray(truth["mag_F277W"], dtype=float), nan=99.0) < 27.0


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def auc_interval(labels: np.ndarray, scores: np.ndarray, n_boot: int = 500,
                 seed: int = 0) -> list[float]:
    """95 % bootstrap interval of the ROC AUC (resampling sources); NaNs when undefined."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if not 0 < labels.sum() < len(labels):
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(n_boot)]
    aucs = [roc_auc_score(labels[i], scores[i]) for i in draws if 0 < labels[i].sum() < len(i)]
    return np.percentile(aucs, [2.5, 97.5]).tolist()


def _truth_column(truth: pa.Table, name: str, match: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """Per catalog row, the matched truth source's `name` (NaN when unmatched or absent)."""
    if name not in truth.column_names:
        return np.full(len(match), np.nan)
    values = np.asarray(truth[name], dtype=float)
    return np.where(matched, values[np.where(matched, match, 0)], np.nan)


def _disk_scores(prefix: str, is_disk: np.ndarray, p_disk: np.ndarray,
                 scored_key: str = "") -> dict[str, Any]:
    """Rows scored, accuracy at P(disk) > 0.5, ROC AUC and its bootstrap 95 % interval."""
    return {scored_key or f"{prefix}_scored": int(len(is_disk)),
            f"{prefix}_accuracy": float(((p_disk > 0.5) == is_disk).mean()) if len(is_disk)
            else float("nan"),
            f"{prefix}_roc_auc": _auc(is_disk, p_disk),
            f"{prefix}_roc_auc_95ci": auc_interval(is_disk, p_disk)}


def compare_with_truth(catalog: pa.Table, truth: pa.Table, radius_px: float = 2.0,
                       min_snr: float = 10.0, resolved_r_half: float = RESOLVED_MIN_RADIUS_ARCSEC,
                       resolved_min_snr: float = RESOLVED_MIN_SNR) -> dict[str, Any]:
    """Completeness, duplicates and classification accuracies (and ROC AUC of P(disk), for all
    galaxies and for resolved ones) of a catalog against truth."""
    match = match_to_truth(catalog, truth, radius_px)
    matched = match >= 0
    truth_hits = np.bincount(match[matched], minlength=truth.num_rows)
    kinds = np.asarray(truth["kind"].to_pylist(), dtype=object)
    bright = bright_truth(truth, min_snr)
    result: dict[str, Any] = {
        "catalog_rows": catalog.num_rows,
        "truth_sources": truth.num_rows,
        "matched_rows": int(matched.sum()),
        "truth_detected_fraction": float((truth_hits > 0).mean()) if truth.num_rows else 0.0,
        "bright_min_snr": min_snr,
        "bright_truth_sources": int(bright.sum()),
        "bright_detected_fraction": float((truth_hits[bright] > 0).mean()) if bright.any() else 0.0,
        "truth_matched_more_than_once": int((truth_hits > 1).sum()),
    }
    names = catalog.column_names
    if "p_disk" in names:
        p_disk = np.asarray(catalog["p_disk"], dtype=float)
        kind = np.where(matched, kinds[np.where(matched, match, 0)], None)
        galaxy = matched & np.isin(kind, ["disk", "non_disk"]) & np.isfinite(p_disk)
        result |= _disk_scores("disk", kind[galaxy] == "disk", p_disk[galaxy],
                               scored_key="disk_galaxies_scored")
        truth_disk = kind[galaxy] == "disk"
        result["disk_majority_baseline"] = float(max(truth_disk.mean(), 1 - truth_disk.mean())) if galaxy.any() else float("nan")
        # Morphology is only defined for resolved galaxies: those with a half-light radius
        # over twice the F277W PSF FWHM (0.092") and detected at S/N > 20.
        r_half = _truth_column(truth, "half_light_radius_arcsec", match, matched)
        snr = _truth_column(truth, "snr_det", match, matched)
        resolved = galaxy & (r_half >= resolved_r_half) & (snr > resolved_min_snr)
        result["disk_resolved_definition"] = (f"half_light_radius >= {resolved_r_half} arcsec and "
                                              f"snr_det > {resolved_min_snr}")
        result |= _disk_scores("disk_resolved", kind[resolved] == "disk", p_disk[resolved])
        if "morph_resolved" in names:  # the catalog's own, observable selection
            chosen = galaxy & np.asarray(catalog["morph_resolved"], dtype=bool)
            result |= _disk_scores("disk_catalog_resolved", kind[chosen] == "disk",
                                   p_disk[chosen])
    if "p_low_z" in names and "z_class" in truth.column_names:
        probs = np.column_stack([np.asarray(catalog[f"p_{c}"], dtype=float) for c in REDSHIFT_CLASSES])
        z_class = np.asarray(truth["z_class"].to_pylist(), dtype=object)
        row_class = np.where(matched, z_class[np.where(matched, match, 0)], None)
        scored = matched & np.isin(row_class, list(REDSHIFT_CLASSES)) & np.isfinite(probs).all(1)
        predicted = np.asarray(REDSHIFT_CLASSES, dtype=object)[np.argmax(np.nan_to_num(probs), 1)]
        result["zclass_scored"] = int(scored.sum())
        result["zclass_accuracy"] = float((predicted[scored] == row_class[scored]).mean()) if scored.any() else float("nan")
        result["zclass_recall"] = {
            c: float((predicted[scored & (row_class == c)] == c).mean())
            if (scored & (row_class == c)).any() else float("nan")
            for c in REDSHIFT_CLASSES
        }
    return result
