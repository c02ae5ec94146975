"""A synthetic JWST/NIRCam survey field: 7-band mosaics, error maps, TAN WCS and a truth catalog.

`simulate_survey(SimConfig())` draws a source population (`population.py`), renders every
source once per band through that band's PSF (`render.py`), adds NIRCam-like noise
(`noise.py`) and returns the mosaics with their truth. `write_simulated_survey` writes
`<out>/survey.zarr` (galscale survey format, via `galscale.survey.store.write_survey`) and
`<out>/truth.parquet`. The same config and seed give byte-identical arrays and truth.

Besides the drawn parameters, the truth has, per source, `x_light`, `y_light` and `snr_det`
(`light_truth` on its noiseless rendering in the inverse-variance stack of the default
detection bands): where its light is and the AUTO-aperture S/N a detection catalog would
report for it alone, for completeness measurements (docs/survey-format.md); and `blend_ratio`,
how much of the other sources' light lies on its core (`BLEND_APERTURE_PX`), to tell
isolated from blended sources when reading completeness.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import galsim
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.wcs import WCS

from galscale.config import NIRCAM_BANDS, NJY_ZEROPOINT_AB, DetectionConfig, SimConfig, config_json
from galscale.sim.noise import band_noise
from galscale.sim.population import KINDS, sample_population
from galscale.sim.profiles import galaxy_profile, profile_extent_arcsec
from galscale.sim.render import draw_bands, psf_fwhm_arcsec, stamp_size_for

TRUTH_FILE = "truth.parquet"
BLEND_APERTURE_PX = 3.0  # radius of the core on which `blend_ratio` compares light (~ 1 PSF FWHM)
SURVEY_DIR = "survey.zarr"


@dataclass
class SimulatedSurvey:
    """Mosaics (nJy/pixel, float32 [ny, nx] per band), error maps, WCS header and truth."""

    config: SimConfig
    science: dict[str, np.ndarray]
    error: dict[str, np.ndarray]
    wcs_header: dict[str, Any]
    truth: pa.Table

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.science)

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.science.values())).shape

    def counts_by_kind(self) -> dict[str, int]:
        """Number of truth sources of each kind."""
        kinds = self.truth.column("kind").to_pylist()
        return {k: kinds.count(k) for k in KINDS}


def validate_config(cfg: SimConfig) -> None:
    """Raise ValueError with the reason when `cfg` cannot be simulated."""
    if cfg.size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {cfg.size}")
    if cfg.n_sources < 0:
        raise ValueError(f"n_sources must be >= 0, got {cfg.n_sources}")
    unknown = [b for b in cfg.bands if b not in NIRCAM_BANDS]
    if unknown or not cfg.bands or len(set(cfg.bands)) != len(cfg.bands):
        raise ValueError(f"bands must be distinct NIRCam wide bands {NIRCAM_BANDS}, got {cfg.bands}")
    if "F277W" not in cfg.bands:
        raise ValueError("bands must include F277W (the flux normalisation band)")
    missing = [b for b in cfg.bands if b not in cfg.depth_ab]
    if missing:
        raise ValueError(f"depth_ab has no depth for bands {missing}")
    fr = np.asarray(cfg.kind_fractions, dtype=float)
    if fr.shape != (4,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"kind_fractions must be 4 non-negative numbers, got {cfg.kind_fractions}")
    if not 0.0 <= cfg.high_z_fraction <= 1.0:
        raise ValueError(f"high_z_fraction must be in [0, 1], got {cfg.high_z_fraction}")
    if not 0.005 <= cfg.pixel_scale_arcsec <= 0.2:
        raise ValueError(f"pixel_scale_arcsec must be in [0.005, 0.2], got {cfg.pixel_scale_arcsec}")


def tan_wcs(cfg: SimConfig) -> WCS:
    """Celestial TAN WCS centred on (ra_deg, dec_deg), north up, east left."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [cfg.ra_deg, cfg.dec_deg]
    w.wcs.crpix = [cfg.size / 2.0 + 0.5, cfg.size / 2.0 + 0.5]
    s = cfg.pixel_scale_arcsec / 3600.0
    w.wcs.cd = np.array([[-s, 0.0], [0.0, s]])
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    return w


def _wcs_header(w: WCS, size: int) -> dict[str, Any]:
    hdr = w.to_header()
    out = {k: hdr[k] for k in hdr if k not in ("COMMENT", "HISTORY", "")}
    out.update(NAXIS=2, NAXIS1=size, NAXIS2=size)
    return out


def _point_extent_pixels(brightest_njy: float) -> float:
    """Stamp radius for a point source: bright stars need room for the Airy wings."""
    if brightest_njy > 1e5:  # brighter than AB 18.9
        return 120.0
    if brightest_njy > 1e4:
        return 60.0
    return 28.0


@functools.cache
def _edge_taper(n: int) -> np.ndarray:
    """[n, n] window: 1 inside radius 0.7 n/2, cosine roll-off to 0 at the stamp edge.

    Applied to point-source stamps so the far diffraction spikes and wings end smoothly
    instead of in a visible box (they hold ~1% of the light; truth fluxes stay totals).
    """
    r = np.hypot(*np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2)) / (n / 2)
    t = np.clip((r - 0.7) / 0.3, 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * t))).astype(np.float64)


def light_truth(stack: np.ndarray, cx: float, cy: float, sigma: float,
                peak_window_px: float | None = None) -> tuple[float, float, float]:
    """(x, y, S/N) of one noiseless source stamp `stack` (the detection stack, profile centre at
    stamp pixel (cx, cy), background 1-sigma per pixel `sigma`).

    x, y: the windowed centroid (SExtractor XWIN: Gaussian window of sigma 2 r_half / 2.35
    around the light, iterated to its fixed point), i.e. where the light is, which for clumpy
    irregulars and bars differs from the profile centre. With `peak_window_px` (mergers: two
    galaxies that a deblender separates) the window has that sigma and starts at the brightest
    pixel, so x, y are the brighter nucleus. S/N: flux in the Kron (AUTO)
    ellipse, 2.5 Kron radii from the light-weighted second moments (at least a circle of 3.5
    px), over sigma sqrt(area): what the detection catalog's `snr` reports for this source
    alone, without noise. Coordinates are stamp pixels.
    """
    n = stack.shape[0]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    im = np.maximum(stack.astype(np.float64), 0.0)
    total = im.sum()
    if not total > 0:
        return cx, cy, 0.0
    r = np.hypot(xx - cx, yy - cy).ravel()
    order = np.argsort(r)
    r_half = float(r[order][np.searchsorted(np.cumsum(im.ravel()[order]), 0.5 * total)])
    sw = 2.0 * max(r_half, 0.5) / 2.35
    x, y = cx, cy
    if peak_window_px is not None:
        sw = peak_window_px
        y, x = (float(v) for v in np.unravel_index(np.argmax(im), im.shape))
    h = int(np.ceil(5.0 * sw)) + 1  # the window is < 4e-6 beyond 5 sigma
    for _ in range(50):
        ys = slice(max(int(y) - h, 0), int(y) + h + 2)
        xs = slice(max(int(x) - h, 0), int(x) + h + 2)
        w = im[ys, xs] * np.exp(-0.5 * ((xx[ys, xs] - x) ** 2 + (yy[ys, xs] - y) ** 2) / sw**2)
        xn, yn = (w * xx[ys, xs]).sum() / w.sum(), (w * yy[ys, xs]).sum() / w.sum()
        done = abs(xn - x) + abs(yn - y) < 1e-5
        x, y = xn, yn
        if done:
            break
    dx, dy = xx - x, yy - y
    inner = im * (np.hypot(dx, dy) < 3.0 * max(r_half, 1.0))
    f = inner.sum()
    cov = np.array([[(inner * dx * dx).sum(), (inner * dx * dy).sum()],
                    [(inner * dx * dy).sum(), (inner * dy * dy).sum()]]) / f
    evals, evecs = np.linalg.eigh(cov)
    a, b = np.sqrt(np.maximum(evals[::-1], 1e-6))
    u = dx * evecs[0, 1] + dy * evecs[1, 1]  # along the major axis
    v = dx * evecs[0, 0] + dy * evecs[1, 0]
    re = np.hypot(u / a, v / b)
    within = re < 6.0
    kron = (re * im)[within].sum() / im[within].sum()
    rk = 2.5 * kron
    if rk * np.sqrt(a * b) < 3.5:
        ap, area = np.hypot(dx, dy) < 3.5, np.pi * 3.5**2
    else:
        ap, area = re < rk, np.pi * a * b * rk**2
    return float(x), float(y), float(stack[ap].sum() / (sigma * np.sqrt(area)))


def aperture_sum(image: np.ndarray, cx: float, cy: float, radius: float) -> float:
    """Sum of the pixels of a 2-D `image` whose centres lie within `radius` of (cx, cy)."""
    h, w = image.shape
    y0, y1 = max(int(np.floor(cy - radius)), 0), min(int(np.ceil(cy + radius)) + 1, h)
    x0, x1 = max(int(np.floor(cx - radius)), 0), min(int(np.ceil(cx + radius)) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return 0.0
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    return float(image[y0:y1, x0:x1][inside].sum())


def render_sources(cols: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                   bands: tuple[str, ...], shape: tuple[int, int], pixel_scale: float,
                   stack_weights: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Noiseless mosaics float32 [n_bands, ny, nx] of all sources, each one's stamp size, and
    (when `stack_weights`, inverse variances per band, zero outside the detection bands, are
    given) each source's `light_truth` on that stack: columns x_light, y_light, snr_det, and
    blend_ratio: the other sources' noiseless light over the source's own within
    BLEND_APERTURE_PX of its light centroid (0 when isolated; > 1 when a neighbour outshines
    its core)."""
    ny, nx = shape
    image = np.zeros((len(bands), ny, nx), dtype=np.float32)
    stamp = np.zeros(len(x), dtype=np.int32)
    light = {k: np.full(len(x), np.nan) for k in ("x_light", "y_light", "snr_det")}
    own_core = np.full(len(x), np.nan)
    fwhm_max = max(psf_fwhm_arcsec(b) for b in bands)
    fluxes = np.stack([cols[f"flux_{b}"] for b in bands], axis=1)
    point = galsim.DeltaFunction()
    keys = list(cols)
    for i in range(len(x)):
        ix, iy = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        if cols["kind"][i] in ("star", "brown_dwarf"):
            prof, knots, m = point, (), 2
            n = stamp_size_for(_point_extent_pixels(float(fluxes[i].max())))
        else:
            row = {k: cols[k][i] for k in keys}
            r_half = float(cols["half_light_radius_arcsec"][i])
            prof, knots = galaxy_profile(row, r_half)
            m = None
            ext = profile_extent_arcsec(row, r_half) + 3.0 * fwhm_max
            n = stamp_size_for(ext / pixel_scale)
        stamp[i] = n
        if m == 2 and not knots and isinstance(prof, galsim.DeltaFunction):
            taper = _edge_taper(n)
        else:
            taper = None
        img = draw_bands(prof, fluxes[i], bands, n, pixel_scale, (x[i] - ix, y[i] - iy), knots,
                         oversample=m)
        if taper is not None:
            img = img * taper
        x0, y0 = ix - n // 2, iy - n // 2
        if stack_weights is not None and stack_weights.sum() > 0:
            w = np.asarray(stack_weights, np.float64)
            stack = np.tensordot(w / w.sum(), img, axes=1)
            peak = None  # mergers: the brighter nucleus (window of the primary's size + PSF)
            if cols["kind"][i] not in ("star", "brown_dwarf") and cols["morph_type"][i] == "merger":
                peak = 2.0 * np.hypot(float(cols["half_light_radius_arcsec"][i]) / pixel_scale,
                                      1.5) / 2.35
            lx, ly, light["snr_det"][i] = light_truth(stack, x[i] - x0, y[i] - y0,
                                                      1.0 / np.sqrt(w.sum()), peak)
            light["x_light"][i], light["y_light"][i] = lx + x0, ly + y0
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + n, nx), min(y0 + n, ny)
        if stack_weights is not None and stack_weights.sum() > 0:
            on_mosaic = np.zeros_like(stack)  # the core as the mosaic holds it
            on_mosaic[ya - y0:yb - y0, xa - x0:xb - x0] = stack[ya - y0:yb - y0, xa - x0:xb - x0]
            own_core[i] = aperture_sum(on_mosaic, lx, ly, BLEND_APERTURE_PX)
        if xa < xb and ya < yb:
            image[:, ya:yb, xa:xb] += img[:, ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
    if stack_weights is not None and stack_weights.sum() > 0:
        w = np.asarray(stack_weights, np.float64)
        total = np.tensordot(w / w.sum(), image, axes=1)
        core = np.array([aperture_sum(total, cx, cy, BLEND_APERTURE_PX)
                         for cx, cy in zip(light["x_light"], light["y_light"], strict=True)])
        with np.errstate(divide="ignore", invalid="ignore"):
            light["blend_ratio"] = np.where(own_core > 0,
                                            np.maximum(core - own_core, 0.0) / own_core, np.inf)
    return image, stamp, light


def simulate_survey(cfg: SimConfig | None = None) -> SimulatedSurvey:
    """Simulate one survey field; deterministic for `cfg.seed`."""
    cfg = cfg or SimConfig()
    validate_config(cfg)
    bands = tuple(b for b in NIRCAM_BANDS if b in cfg.bands)  # always blue to red
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 20260]))
    n = cfg.n_sources
    fr = np.asarray(cfg.kind_fractions, dtype=float)
    kinds = np.asarray(KINDS, dtype=object)[rng.choice(4, size=n, p=fr / fr.sum())]
    z_class = np.where(rng.random(n) < cfg.high_z_fraction, "high_z", "low_z").astype(object)
    cols = sample_population(kinds, z_class, rng, bands=bands,
                             galaxy_mag_range=cfg.galaxy_mag_range)
    margin = 8.0
    x = rng.uniform(margin, cfg.size - 1 - margin, n)
    y = rng.uniform(margin, cfg.size - 1 - margin, n)
    w = tan_wcs(cfg)
    ra, dec = w.wcs_pix2world(x, y, 0)
    noises = [band_noise(b, cfg.depth_ab[b], cfg.pixel_scale_arcsec) for b in bands]
    det_bands = DetectionConfig().bands
    stack_w = np.array([1.0 / nz.sigma_bkg**2 if b in det_bands else 0.0
                        for b, nz in zip(bands, noises, strict=True)])
    clean, stamp, light = render_sources(cols, x, y, bands, (cfg.size, cfg.size),
                                         cfg.pixel_scale_arcsec, stack_w)
    science, error = {}, {}
    for j, b in enumerate(bands):
        noise_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 20261, j]))
        science[b], error[b] = noises[j].add(clean[j], noise_rng)
    del clean
    columns: dict[str, Any] = {
        "source_id": np.arange(1, n + 1, dtype=np.int64),
        "ra": np.asarray(ra, dtype=float), "dec": np.asarray(dec, dtype=float),
        "x": x, "y": y,
    }
    columns.update(cols)
    columns["stamp_size"] = stamp
    columns.update(light)
    truth = pa.table({k: pa.array(list(v) if np.asarray(v).dtype == object else v)
                      for k, v in columns.items()})
    truth = truth.replace_schema_metadata({
        "galscale_sim_config": config_json(cfg),
        "x_y_convention": "0-based pixel centroid; pixel (0, 0) centre is (0.0, 0.0)",
    })
    return SimulatedSurvey(cfg, science, error, _wcs_header(w, cfg.size), truth)


def write_simulated_survey(sim: SimulatedSurvey, out_dir: str) -> dict[str, str]:
    """Write `<out_dir>/survey.zarr` and `<out_dir>/truth.parquet`; returns their paths."""
    from galscale.sim.render import psf_encircled_energy_curves
    from galscale.survey.psf import PSF_ATTR
    from galscale.survey.store import write_survey

    os.makedirs(out_dir, exist_ok=True)
    zarr_path = os.path.join(out_dir, SURVEY_DIR)
    truth_path = os.path.join(out_dir, TRUTH_FILE)
    write_survey(
        zarr_path, sim.science, sim.error, sim.wcs_header,
        pixel_scale_arcsec=sim.config.pixel_scale_arcsec, zeropoint_ab=NJY_ZEROPOINT_AB,
        bunit="nJy", chunk=sim.config.chunk, name=sim.config.name,
        attrs={"truth": f"../{TRUTH_FILE}", "simulated": True,
               "sim_config": config_json(sim.config),
               PSF_ATTR: psf_encircled_energy_curves(list(sim.science),
                                                     sim.config.pixel_scale_arcsec)},
    )
    pq.write_table(sim.truth, truth_path)
    return {"survey": zarr_path, "truth": truth_path}
