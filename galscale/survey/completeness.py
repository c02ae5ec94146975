"""Detection completeness against a truth catalog: recovery, position and flux accuracy.

A truth source counts as recovered when a detection lies within `max_offset_px` (1 px) of it
(nearest neighbour, one detection per truth source). The truth S/N is the matched-filter S/N of
an elliptical Gaussian on the detection stack, S/N = F / (sigma_pix * sqrt(4 pi a b)), with F
and sigma_pix the inverse-variance stack's flux and pixel noise: an upper bound on any
aperture's S/N, so selecting S/N > 10 on it is conservative. Fluxes agree "within errors" when
|f_measured - f_true| < 3 sigma_f (per source and band).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class Completeness:
    """Figures of one comparison (fractions in [0, 1])."""

    n_truth: int  # truth sources with S/N above the cut
    n_recovered: int  # of those, with a detection within max_offset_px
    completeness: float
    median_offset_px: float
    flux_within_3sigma: float  # fraction of (recovered source, band) pairs
    median_flux_ratio: float  # measured / true, all bands
    snr_min: float

    def summary(self) -> str:
        return (f"S/N > {self.snr_min:g}: {self.n_recovered}/{self.n_truth} recovered within "
                f"1 px = {100 * self.completeness:.1f}% completeness; median offset "
                f"{self.median_offset_px:.3f} px; fluxes within 3 sigma: "
                f"{100 * self.flux_within_3sigma:.1f}%; median flux ratio "
                f"{self.median_flux_ratio:.4f}")


def truth_snr(truth: Mapping[str, np.ndarray], bands: Sequence[str],
              noise: Mapping[str, float], sigma_px: np.ndarray | None = None,
              q: np.ndarray | None = None) -> np.ndarray:
    """Matched-filter S/N of Gaussian-like truth sources on the inverse-variance stack of
    `bands`: F / (sigma_pix sqrt(4 pi s^2 q)), with s the Gaussian sigma in pixels (truth
    column `sigma` unless `sigma_px` is given) and q the axis ratio (truth `q` or 1)."""
    w = np.array([1.0 / noise[b] ** 2 for b in bands])
    flux = sum(wi * truth[f"flux_{b}"] for wi, b in zip(w, bands, strict=True)) / w.sum()
    sigma_pix = 1.0 / np.sqrt(w.sum())
    s = np.asarray(truth["sigma"] if sigma_px is None else sigma_px, np.float64)
    qq = np.asarray(truth.get("q", 1.0) if q is None else q, np.float64)
    return flux / (sigma_pix * np.sqrt(4 * np.pi * s * s * qq))


def completeness(detected: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
                 truth_sn: np.ndarray, bands: Sequence[str], snr_min: float = 10.0,
                 max_offset_px: float = 1.0) -> Completeness:
    """Compare detections (catalog columns) with truth (x, y, flux_<BAND>)."""
    sel = truth_sn > snr_min
    tx, ty = truth["x"][sel], truth["y"][sel]
    tree = cKDTree(np.c_[detected["x"], detected["y"]])
    dist, idx = tree.query(np.c_[tx, ty])
    ok = dist <= max_offset_px
    within, ratio = [], []
    for b in bands:
        f_true = truth[f"flux_{b}"][sel][ok]
        f, e = detected[f"flux_{b}"][idx[ok]], detected[f"flux_err_{b}"][idx[ok]]
        within.append(np.abs(f - f_true) < 3 * e)
        ratio.append(f / f_true)
    n = int(sel.sum())
    return Completeness(
        n_truth=n, n_recovered=int(ok.sum()), completeness=float(ok.mean()) if n else np.nan,
        median_offset_px=float(np.median(dist[ok])) if ok.any() else np.nan,
        flux_within_3sigma=float(np.mean(np.concatenate(within))) if ok.any() else np.nan,
        median_flux_ratio=float(np.median(np.concatenate(ratio))) if ok.any() else np.nan,
        snr_min=snr_min,
    )


__all__ = ["Completeness", "truth_snr", "completeness"]
