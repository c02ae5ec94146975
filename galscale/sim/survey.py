"""A synthetic JWST/NIRCam survey field: 7-band mosaics, error maps, TAN WCS and a truth catalog.

`simulate_survey(SimConfig())` draws a source population (`population.py`), renders every
source once per band through that band's PSF (`render.py`), adds NIRCam-like noise
(`noise.py`) and returns the mosaics with their truth. `write_simulated_survey` writes
`<out>/survey.zarr` (galscale survey format, via `galscale.survey.store.write_survey`) and
`<out>/truth.parquet`. The same config and seed give byte-identical arrays and truth.
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

from galscale.config import NIRCAM_BANDS, NJY_ZEROPOINT_AB, SimConfig, config_json
from galscale.sim.noise import band_noise
from galscale.sim.population import KINDS, sample_population
from galscale.sim.profiles import galaxy_profile, profile_extent_arcsec
from galscale.sim.render import draw_bands, psf_fwhm_arcsec, stamp_size_for

TRUTH_FILE = "truth.parquet"
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


def render_sources(cols: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                   bands: tuple[str, ...], shape: tuple[int, int],
                   pixel_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless mosaics float32 [n_bands, ny, nx] of all sources, and each one's stamp size."""
    ny, nx = shape
    image = np.zeros((len(bands), ny, nx), dtype=np.float32)
    stamp = np.zeros(len(x), dtype=np.int32)
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
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + n, nx), min(y0 + n, ny)
        if xa < xb and ya < yb:
            image[:, ya:yb, xa:xb] += img[:, ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
    return image, stamp


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
    clean, stamp = render_sources(cols, x, y, bands, (cfg.size, cfg.size), cfg.pixel_scale_arcsec)
    science, error = {}, {}
    for j, b in enumerate(bands):
        noise_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 20261, j]))
        noise = band_noise(b, cfg.depth_ab[b], cfg.pixel_scale_arcsec)
        science[b], error[b] = noise.add(clean[j], noise_rng)
    del clean
    columns: dict[str, Any] = {
        "source_id": np.arange(1, n + 1, dtype=np.int64),
        "ra": np.asarray(ra, dtype=float), "dec": np.asarray(dec, dtype=float),
        "x": x, "y": y,
    }
    columns.update(cols)
    columns["stamp_size"] = stamp
    truth = pa.table({k: pa.array(list(v) if np.asarray(v).dtype == object else v)
                      for k, v in columns.items()})
    truth = truth.replace_schema_metadata({
        "galscale_sim_config": config_json(cfg),
        "x_y_convention": "0-based pixel centroid; pixel (0, 0) centre is (0.0, 0.0)",
    })
    return SimulatedSurvey(cfg, science, error, _wcs_header(w, cfg.size), truth)


def write_simulated_survey(sim: SimulatedSurvey, out_dir: str) -> dict[str, str]:
    """Write `<out_dir>/survey.zarr` and `<out_dir>/truth.parquet`; returns their paths."""
    from galscale.survey.store import write_survey

    os.makedirs(out_dir, exist_ok=True)
    zarr_path = os.path.join(out_dir, SURVEY_DIR)
    truth_path = os.path.join(out_dir, TRUTH_FILE)
    write_survey(
        zarr_path, sim.science, sim.error, sim.wcs_header,
        pixel_scale_arcsec=sim.config.pixel_scale_arcsec, zeropoint_ab=NJY_ZEROPOINT_AB,
        bunit="nJy", chunk=sim.config.chunk, name=sim.config.name,
        attrs={"truth": f"../{TRUTH_FILE}", "simulated": True,
               "sim_config": config_json(sim.config)},
    )
    pq.write_table(sim.truth, truth_path)
    return {"survey": zarr_path, "truth": truth_path}
