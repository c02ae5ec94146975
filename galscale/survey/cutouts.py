"""Cutouts of owned sources from a tile's in-memory pixel block.

- 7-band flux cutout `float32 [N, 7, 64, 64]` (bands in `config.NIRCAM_BANDS` order) and its
  1-sigma error cutout; pixels without data (off the survey, NaN, non-finite or zero/negative
  error, or a band absent from the survey) are padded with flux 0 and error 0 (= zero weight).
- 3-channel morphology cutout `float32 [N, 3, 256, 256]` (channels `config.MORPHOLOGY_BANDS`,
  R, G, B) stretched to [0, 1] by `morphology_stretch` (the simulator's training-stamp stretch:
  one asinh per image, softening 0.02 x the central peak); padded pixels are 0. It is framed
  by the galaxy's size, as Galaxy Zoo frames its pictures by the Petrosian radius: with r50
  the flux radius on the stack of the morphology bands at the source pixel (`frame_radius`),
  it shows a square of side `morph_side_per_radius` x r50 (16, the middle of the morphology
  training stamps, where r50 is 8-27 of 256 px; at least `morph_min_side_px`, at most 256
  native pixels) centred on the source pixel and resampled bilinearly to 256 px. Larger or
  unmeasurable sources, and `morph_side_per_radius=None`, get 256 native pixels.

A native cutout of size S is centred on the source's nearest pixel (px, py): it covers rows
py - S//2 .. py + S//2 - 1 (the source pixel is at index S//2). `masked_fraction` is the fraction
of padded pixels in the 7-band cutout (all bands), `morph_masked_fraction` in the morphology one;
EDGE is set when a cutout crosses the survey edge, MASKED when any pixel is padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from galscale.config import MORPH_STRETCH_SOFTENING, CutoutConfig
from galscale.survey.store import SurveyBlock


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


def morphology_frame_side(flux_radius: np.ndarray, config: CutoutConfig) -> np.ndarray:
    """Side (native pixels) of the square each morphology cutout shows; NaN: native cutout."""
    r = np.asarray(flux_radius, np.float64)
    if config.morph_side_per_radius is None:
        return np.full(r.shape, np.nan)
    side = np.clip(config.morph_side_per_radius * r, config.morph_min_side_px, config.morph_size)
    return np.where(np.isfinite(r) & (r > 0) & (side < config.morph_size), side, np.nan)


def morphology_resolved(flux_radius_px: np.ndarray, snr: np.ndarray, pixel_scale_arcsec: float,
                        config: CutoutConfig) -> np.ndarray:
    """bool [N]: resolved and bright enough for P(disk) to mean something (flux radius >=
    `config.resolved_min_radius_arcsec` and S/N >= `config.resolved_min_snr`; NaN: False)."""
    radius = np.asarray(flux_radius_px, np.float64) * pixel_scale_arcsec
    with np.errstate(invalid="ignore"):
        return (radius >= config.resolved_min_radius_arcsec) & (
            np.asarray(snr, np.float64) >= config.resolved_min_snr)


def _sample_positions(side: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower pixel offset, fraction) of `size` samples spaced side / size apart and centred
    on a pixel, along one axis. Offsets are relative to that pixel, so the interpolation does
    not depend on where the block starts."""
    pos = (np.arange(size) + 0.5) * (side / size) - side / 2.0
    low = np.floor(pos)
    return low.astype(np.int64), pos - low


def _resample(arr: np.ndarray, cy: int, cx: int, side: float, size: int) -> np.ndarray:
    """[C, size, size] bilinear resampling of the side x side square of arr [C, h, w] centred
    at local pixel (cy, cx); zero outside arr. Separable: rows first, then columns."""
    ly, fy = _sample_positions(side, size)
    lx, fx = _sample_positions(side, size)
    y0, x0 = ly.min(), lx.min()
    window = _cut_window(arr, cy + int(y0), cx + int(x0), int(ly.max() - y0) + 2,
                         int(lx.max() - x0) + 2).astype(np.float64)
    iy, ix = ly - y0, lx - x0
    rows = window[:, iy, :] * (1.0 - fy)[:, None] + window[:, iy + 1, :] * fy[:, None]
    return (rows[:, :, ix] * (1.0 - fx) + rows[:, :, ix + 1] * fx).astype(np.float32)


def _cut_window(arr: np.ndarray, y0: int, x0: int, ny: int, nx: int) -> np.ndarray:
    """arr[:, y0:y0 + ny, x0:x0 + nx], zero-padded where it leaves arr."""
    out = np.zeros((arr.shape[0], ny, nx), arr.dtype)
    ya, yb = max(0, y0), min(arr.shape[1], y0 + ny)
    xa, xb = max(0, x0), min(arr.shape[2], x0 + nx)
    if ya < yb and xa < xb:
        out[:, ya - y0:yb - y0, xa - x0:xb - x0] = arr[:, ya:yb, xa:xb]
    return out


def _cut(arr: np.ndarray, cy: int, cx: int, size: int) -> np.ndarray:
    """[C, size, size] window of arr [C, h, w] centred at local (cy, cx); zero/False padded."""
    return _cut_window(arr, cy - size // 2, cx - size // 2, size, size)


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


def frame_radius(block: SurveyBlock, px: np.ndarray, py: np.ndarray,
                 config: CutoutConfig) -> np.ndarray:
    """Flux radius (pixels) that frames each morphology cutout: measured on the stack of the
    morphology bands at the source pixel (px, py), so that the survey job, `classify-cutouts`
    and the report's gallery, whatever block they cut from, frame a source identically. NaN
    where it cannot be measured (no morphology band, source pixel outside the block)."""
    from galscale.survey.sources import stack_flux_radius

    lx, ly = np.asarray(px) - block.x0, np.asarray(py) - block.y0
    inside = (lx >= 0) & (lx < block.shape[1]) & (ly >= 0) & (ly < block.shape[0])
    radius = np.full(len(lx), np.nan)
    if config.morph_side_per_radius is None or not inside.any() or not any(
            b in block.bands for b in config.morph_bands):
        return radius
    radius[inside], _ = stack_flux_radius(block, lx[inside].astype(np.float64),
                                          ly[inside].astype(np.float64), config.morph_bands)
    return radius


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
    side = morphology_frame_side(frame_radius(block, px, py, cfg), cfg)
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
        if np.isfinite(side[i]):
            s = _resample(sci_mo, cy, cx, side[i], ms)
            # a framed square (side < ms) reads pixels within ms // 2 + 1 of the source pixel
            good = (np.ones(s.shape, bool) if _cut(good_mo, cy, cx, ms + 2).all()
                    else _resample(good_mo, cy, cx, side[i], ms) > 0.5)
        else:
            s = _cut(sci_mo, cy, cx, ms)
            good = _cut(good_mo, cy, cx, ms)
        morph_mfrac[i] = 1.0 - good.mean()
        morph[i] = morphology_stretch(s, cfg.softening, cfg.peak_box) * good
    return Cutouts(flux, ferr, morph, mfrac, morph_mfrac, edge, outside)


__all__ = ["CutoutConfig", "Cutouts", "morphology_stretch", "frame_radius",
           "morphology_frame_side", "morphology_resolved", "make_cutouts"]
