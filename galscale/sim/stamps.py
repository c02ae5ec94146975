"""Training sets without mosaics: isolated sources on stamps, with truth labels.

* `morphology_stamps`: clean 3-channel [N, 3, size, size] images (channels
  `config.MORPHOLOGY_BANDS` = F277W, F200W, F150W as R, G, B) of well-resolved disk and non-disk
  galaxies, stretched to [0, 1]; optionally with 1-3 contaminants and noise
  (`contaminants.py`). Stretch: `galscale.survey.cutouts.morphology_stretch`, the same one the
  survey cutouts use, so the models see one image distribution.
* `redshift_stamps`: 7-band [N, 7, size, size] flux cubes in nJy/pixel with NIRCam-like noise,
  their 1-sigma error cubes and class labels (`config.REDSHIFT_CLASSES`: 0 low_z, 1 high_z,
  2 brown_dwarf), with magnitudes spanning S/N ~ 3 to > 1000.

Sources come from the same population model and renderer as the survey mosaics.
"""

from __future__ import annotations

import galsim
import numpy as np
import pyarrow as pa

from galscale.config import MORPHOLOGY_BANDS, NIRCAM_BANDS, REDSHIFT_CLASSES, SIM_DEPTH_AB
from galscale.sim.contaminants import add_contaminants, add_noise
from galscale.sim.noise import band_noise
from galscale.sim.population import sample_population
from galscale.sim.profiles import galaxy_profile, profile_extent_arcsec
from galscale.sim.render import draw_bands, psf_fwhm_arcsec, stamp_size_for
from galscale.survey.cutouts import morphology_stretch

PIXEL_SCALE = 0.03
MORPH_R_HALF_RANGE = (0.25, 0.8)  # arcsec: 8-27 pixels, resolved structure in 256 px stamps


def _table(cols: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> pa.Table:
    data = {**extra, **cols}
    return pa.table({k: pa.array(list(v) if np.asarray(v).dtype == object else v)
                     for k, v in data.items()})


def _row(cols: dict[str, np.ndarray], i: int) -> dict:
    return {k: v[i] for k, v in cols.items()}


def _draw_size(row: dict, size: int, bands: tuple[str, ...]) -> int:
    """Stamp side to draw on: the output size, or larger when the source's light (or a point
    source's PSF wings) would otherwise wrap around; the centre `size` pixels are kept."""
    if row["kind"] in ("star", "brown_dwarf"):
        return 2 * size
    r_half = float(row["half_light_radius_arcsec"])
    ext = profile_extent_arcsec(row, r_half) + 3.0 * max(psf_fwhm_arcsec(b) for b in bands)
    return max(size, stamp_size_for(ext / PIXEL_SCALE))


def morphology_stamps(n: int, seed: int, size: int = 256, contaminate: bool = False,
                      noise: bool = False) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """(images float32 [n, 3, size, size] in [0, 1], is_disk int64 [n], meta table).

    Half the galaxies are disks (exponential + bulge/bar/arms), half non-disks (spheroids,
    irregulars, mergers). `contaminate` injects 1-3 stars/galaxies per stamp, `noise` adds
    realistic noise; the meta table has the truth parameters plus `n_contaminants`-free flags
    `contaminated` and `noisy`.
    """
    if n < 0 or size < 32 or size % 2:
        raise ValueError(f"need n >= 0 and an even size >= 32, got n={n}, size={size}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 101]))
    kinds = np.where(rng.random(n) < 0.5, "disk", "non_disk").astype(object)
    cols = sample_population(kinds, np.full(n, "low_z", dtype=object), rng,
                             bands=NIRCAM_BANDS, galaxy_mag_range=(19.0, 22.5),
                             r_half_range=MORPH_R_HALF_RANGE)
    bands = MORPHOLOGY_BANDS
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        row = _row(cols, i)
        prof, knots = galaxy_profile(row, float(row["half_light_radius_arcsec"]))
        fl = np.array([row[f"flux_{b}"] for b in bands])
        off = tuple(rng.uniform(-0.5, 0.5, 2))
        big = _draw_size(row, size, bands)
        img = draw_bands(prof, fl, bands, big, PIXEL_SCALE, off, knots, oversample=1)
        c0 = (big - size) // 2
        stretched = morphology_stretch(img[:, c0:c0 + size, c0:c0 + size], peak_box=None)
        if contaminate:
            stretched = add_contaminants(stretched, rng)
        if noise:
            stretched = add_noise(stretched, rng)
        images[i] = stretched
    labels = (kinds == "disk").astype(np.int64)
    meta = _table(cols, {"index": np.arange(n, dtype=np.int64),
                         "contaminated": np.full(n, contaminate), "noisy": np.full(n, noise)})
    return images, labels, meta


def _flux_radius(img: np.ndarray) -> float:
    """Radius (pixels) around the stamp centre holding half the stamp's flux."""
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(xx - w // 2, yy - h // 2).ravel()
    order = np.argsort(r)
    cum = np.cumsum(np.clip(img.ravel()[order], 0, None))
    if cum[-1] <= 0:
        return float("nan")
    return float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])


def redshift_stamps(n: int, seed: int, class_fractions: tuple[float, float, float] = (0.45, 0.45, 0.10),
                    size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Table]:
    """(flux float32 [n, 7, size, size] nJy/pixel with noise, error float32 [same], labels int64
    [n] indexing REDSHIFT_CLASSES, meta table).

    Galaxies are half disks, half non-disks; brown dwarfs are point sources. Magnitudes:
    low-z F277W 20-29, high-z F277W 25.5-29.5, brown dwarfs F444W 23.5-28.5, so S/N spans
    faint detections to very bright sources. Meta: truth columns (redshift, z_class, fluxes,
    mags, morphology), `flux_radius_pix` (half-light radius measured on the noiseless F277W
    stamp, PSF included) and the centre offset.
    """
    fr = np.asarray(class_fractions, dtype=float)
    if fr.shape != (len(REDSHIFT_CLASSES),) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"class_fractions must be {len(REDSHIFT_CLASSES)} non-negative numbers")
    if n < 0 or size < 16 or size % 2:
        raise ValueError(f"need n >= 0 and an even size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 202]))
    labels = rng.choice(len(REDSHIFT_CLASSES), size=n, p=fr / fr.sum()).astype(np.int64)
    z_class = np.asarray(REDSHIFT_CLASSES, dtype=object)[labels]
    gal_kind = np.where(rng.random(n) < 0.5, "disk", "non_disk").astype(object)
    kinds = np.where(z_class == "brown_dwarf", "brown_dwarf", gal_kind).astype(object)
    cols = sample_population(kinds, z_class, rng, galaxy_mag_range=(20.0, 29.0),
                             high_z_mag_range=(25.5, 29.5), brown_dwarf_mag_range=(23.5, 28.5))
    bands = NIRCAM_BANDS
    noises = [band_noise(b, SIM_DEPTH_AB[b], PIXEL_SCALE) for b in bands]
    flux = np.empty((n, len(bands), size, size), dtype=np.float32)
    err = np.empty_like(flux)
    radius = np.empty(n)
    offsets = rng.uniform(-0.5, 0.5, size=(n, 2))
    point = galsim.DeltaFunction()
    i277 = bands.index("F277W")
    for i in range(n):
        row = _row(cols, i)
        if row["kind"] == "brown_dwarf":
            prof, knots = point, ()
        else:
            prof, knots = galaxy_profile(row, float(row["half_light_radius_arcsec"]))
        fl = np.array([row[f"flux_{b}"] for b in bands])
        big = _draw_size(row, size, bands)
        img = draw_bands(prof, fl, bands, big, PIXEL_SCALE, tuple(offsets[i]), knots, oversample=2)
        c0 = (big - size) // 2
        clean = img[:, c0:c0 + size, c0:c0 + size].astype(np.float32)
        radius[i] = _flux_radius(clean[i277])
        for j, nz in enumerate(noises):
            flux[i, j], err[i, j] = nz.add(clean[j], rng)
    meta = _table(cols, {"index": np.arange(n, dtype=np.int64), "label": labels,
                         "flux_radius_pix": radius, "offset_x": offsets[:, 0],
                         "offset_y": offsets[:, 1]})
    return flux, err, labels, meta
