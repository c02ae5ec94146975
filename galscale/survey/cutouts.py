"""Cutouts of owned sources from a tile's in-memory pixel block.

- 7-band flux cutout `float32 [N, 7, 64, 64]` (bands in `config.NIRCAM_BANDS` order) and its
  1-sigma error cutout; pixels without data (off the survey, NaN, non-finite or zero/negative
  error, or a band absent from the survey) are padded with flux 0 and error 0 (= zero weight).
- 3-channel morphology cutout `float32 [N, 3, 256, 256]` (channels `config.MORPHOLOGY_BANDS`,
  R, G, B) stretched to [0, 1] by `morphology_stretch` (the simulator's training-stamp stretch:
  one asinh per image, softening 0.02 x the central peak); padded pixels are 0.

A cutout of size S is centred on the source's nearest pixel (px, py): it covers rows
py - S//2 .. py + S//2 - 1 (the source pixel is at index S//2). `masked_fraction` is the fraction
of padded pixels in the 7-band cutout (all bands), `morph_masked_fraction` in the morphology one;
EDGE is set when a cutout crosses the survey edge, MASKED when any pixel is padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from galscale.config import MORPH_CUTOUT, MORPHOLOGY_BANDS, MULTIBAND_CUTOUT, NIRCAM_BANDS
from galscale.survey.store import SurveyBlock

MORPH_STRETCH_SOFTENING = 0.02  # asinh softening as a fraction of the peak (= galscale.sim)


@dataclass(frozen=True)
class CutoutConfig:
    """Cutout sizes, bands and the morphology stretch (defaults documented in the module)."""

    multiband_size: int = MULTIBAND_CUTOUT
    multiband_bands: tuple[str, ...] = NIRCAM_BANDS
    morph_size: int = MORPH_CUTOUT
    morph_bands: tuple[str, ...] = MORPHOLOGY_BANDS
    softening: float = MORPH_STRETCH_SOFTENING  # s = softening x peak
    peak_box: int = 16  # the peak is the brightest pixel of the central peak_box^2 (all channels)


def morphology_stretch(flux: np.ndarray, softening: float = MORPH_STRETCH_SOFTENING,
                       peak_box: int | None = 16) -> np.ndarray:
    """Linear flux [..., C, H, W] -> float32 [0, 1]: one asinh stretch per image for all channels.

    y = asinh(f / s) / asinh(f_max / s), s = softening x f_max, f clipped at 0 and y at 1, with
    f_max the brightest pixel (over channels) of the central `peak_box` x `peak_box` pixels
    (the whole image when None). This is the training-stamp stretch of `galscale.sim.stamps`
    (there the stamp's brightest pixel is the centred galaxy's peak); measuring the peak at the
    centre keeps a brighter neighbour from setting the scale of a survey cutout. NaN -> 0;
    images without positive flux at the centre -> all 0.
    """
    f = np.clip(np.nan_to_num(np.asarray(flux, dtype=np.float64), nan=0.0), 0.0, None)
    h, w = f.shape[-2:]
    if peak_box is None:
        centre = f
    else:
        b = min(peak_box, h, w)
        y0, x0 = (h - b) // 2, (w - b) // 2
        centre = f[..., y0:y0 + b, x0:x0 + b]
    fmax = centre.reshape(*f.shape[:-3], -1).max(axis=-1)
    fmax = np.asarray(fmax, np.float64)[..., None, None, None]
    ok = fmax > 0
    scale = np.where(ok, softening * fmax, 1.0)
    y = np.arcsinh(f / scale) / np.where(ok, np.arcsinh(np.where(ok, fmax, 1.0) / scale), 1.0)
    return np.where(ok, np.clip(y, 0.0, 1.0), 0.0).astype(np.float32)


def _cut(arr: np.ndarray, cy: int, cx: int, size: int) -> np.ndarray:
    """[C, size, size] window of arr [C, h, w] centred at local (cy, cx); zero/False padded."""
    c, h, w = arr.shape
    out = np.zeros((c, size, size), arr.dtype)
    y0, x0 = cy - size // 2, cx - size // 2
    ya, yb, xa, xb = max(0, y0), min(h, y0 + size), max(0, x0), min(w, x0 + size)
    if ya < yb and xa < xb:
        out[:, ya - y0:yb - y0, xa - x0:xb - x0] = arr[:, ya:yb, xa:xb]
    return out


@dataclass
class Cutouts:
    """Cutouts of N sources plus their padding diagnostics."""

    multiband_flux: np.ndarray  # float32 [N, 7, 64, 64]
    multiband_err: np.ndarray  # float32 [N, 7, 64, 64], 0 where padded
    morph: np.ndarray  # float32 [N, 3, 256, 256] in [0, 1]
    masked_fraction: np.ndarray  # float64 [N]
    morph_masked_fraction: np.ndarray  # float64 [N]
    edge: np.ndarray  # bool [N]: a cutout crosses the survey edge
    outside_block: np.ndarray  # bool [N]: a cutout crosses the block edge inside the survey


def make_cutouts(block: SurveyBlock, x: np.ndarray, y: np.ndarray,
                 survey_shape: tuple[int, int], config: CutoutConfig | None = None) -> Cutouts:
    """Cutouts at survey positions (x, y) from `block` (bands absent from it are padded)."""
    cfg = config or CutoutConfig()
    n = len(x)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    # non-finite positions (unprojectable catalog rows) get fully padded cutouts, flagged edge
    far = -(10 * max(cfg.morph_size, cfg.multiband_size) + 10 * max(survey_shape))
    px = np.floor(np.where(finite, x, far) + 0.5).astype(np.int64)
    py = np.floor(np.where(finite, y, far) + 0.5).astype(np.int64)
    ny, nx = survey_shape
    mb, ms = cfg.multiband_size, cfg.morph_size
    flux = np.zeros((n, len(cfg.multiband_bands), mb, mb), np.float32)
    ferr = np.zeros_like(flux)
    morph = np.zeros((n, len(cfg.morph_bands), ms, ms), np.float32)
    mfrac = np.ones(n)
    morph_mfrac = np.ones(n)
    edge = np.zeros(n, bool)
    outside = np.zeros(n, bool)
    idx = {b: i for i, b in enumerate(block.bands)}

    def stack(bands: Sequence[str], which: np.ndarray) -> np.ndarray:
        return np.stack([which[idx[b]] if b in idx else np.full(block.shape, np.nan, np.float32)
                         for b in bands])

    def clean(bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sci, err = stack(bands, block.sci), stack(bands, block.err)
        good = np.isfinite(sci) & np.isfinite(err) & (err > 0)
        return np.where(good, sci, 0).astype(np.float32), np.where(good, err, 0).astype(
            np.float32), good

    sci_mb, err_mb, good_mb = clean(cfg.multiband_bands)
    sci_mo, err_mo, good_mo = clean(cfg.morph_bands)
    for i in range(n):
        cy, cx = int(py[i] - block.y0), int(px[i] - block.x0)
        for size in (mb, ms):
            half = size // 2
            if (py[i] - half < 0 or px[i] - half < 0 or py[i] - half + size > ny
                    or px[i] - half + size > nx):
                edge[i] = True
            if (cy - half < 0 or cx - half < 0 or cy - half + size > block.shape[0]
                    or cx - half + size > block.shape[1]):
                outside[i] = True
        flux[i] = _cut(sci_mb, cy, cx, mb)
        ferr[i] = _cut(err_mb, cy, cx, mb)
        mfrac[i] = 1.0 - _cut(good_mb, cy, cx, mb).mean()
        s = _cut(sci_mo, cy, cx, ms)
        good = _cut(good_mo, cy, cx, ms)
        morph_mfrac[i] = 1.0 - good.mean()
        morph[i] = morphology_stretch(s, cfg.softening, cfg.peak_box) * good
    return Cutouts(flux, ferr, morph, mfrac, morph_mfrac, edge, outside)


__all__ = ["CutoutConfig", "Cutouts", "morphology_stretch", "make_cutouts"]
