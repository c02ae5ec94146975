"""Detection completeness against a truth catalog: recovery, position and flux accuracy.

A truth source counts as recovered when a detection lies within `max_offset_px` (1 px) of it
(nearest neighbour, one detection per truth source). Fluxes agree "within errors" when
|f_measured - f_true| < 3 sigma_f (per source and band).

Truth S/N: for Gaussian sources `truth_snr`, the matched-filter S/N on the detection stack,
S/N = F / (sigma_pix * sqrt(4 pi a b)) (exact for Gaussians; an upper bound on any aperture's
S/N). For galscale.sim surveys use the simulator's `snr_det` (noiseless AUTO-aperture S/N of
each rendered source) and positions `x_light`, `y_light`: a Gaussian-equivalent S/N overstates
Sersic and extended profiles by up to ~3x (docs/survey-format.md, "Detection completeness").
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
                 max_offset_px: float = 1.0,
                 position: tuple[str, str] = ("x", "y")) -> Completeness:
    """Compare detections (catalog columns) with truth (`position` columns, flux_<BAND>).

    `position` names the truth position columns: ("x_light", "y_light") for galscale.sim
    truth (where the light is; the profile centre ("x", "y") of a merger or clumpy irregular
    can lie pixels away from it).
    """
    sel = truth_sn > snr_min
    tx, ty = truth[position[0]][sel], truth[position[1]][sel]
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


def spurious(detected: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
             radius_px: float = 2.0, position: tuple[str, str] = ("x", "y"),
             det_snr_min: float = 0.0) -> tuple[int, int]:
    """(spurious, total) detections with catalog snr >= det_snr_min; a detection is spurious
    when no truth source (of any S/N) lies within `radius_px` of it: a noise peak or a
    fragment of a shredded galaxy."""
    use = np.asarray(detected["snr"]) >= det_snr_min
    if not use.any():
        return 0, 0
    dist, _ = cKDTree(np.c_[truth[position[0]], truth[position[1]]]).query(
        np.c_[detected["x"][use], detected["y"][use]])
    return int((dist > radius_px).sum()), int(use.sum())


__all__ = ["Completeness", "truth_snr", "completeness", "spurious"]
