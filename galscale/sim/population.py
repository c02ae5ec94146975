"""Random source populations: kind, redshift, SED, brightness, size and morphology.

Shared by the survey mosaics (`survey.py`) and the training stamps (`stamps.py`), so that both
draw sources from one model. Distributions (all documented in docs/simulation.md):

* low-z galaxies: z = 0.1 + Gamma(2, 0.6), capped at 5.5 (median ~1.1); CWW template mixture
  E..Im; reference magnitude F277W from number counts dN/dm ~ 10^(0.3 m) in `galaxy_mag_range`.
* high-z galaxies: z in 6-12 with p(z) ~ exp(-(z - 6) / 1.8) (fewer at higher z); blue Scd..Im
  templates with IGM absorption; F277W magnitude in `high_z_mag_range`; sizes 0.6x smaller.
* sizes: log10 r_half["] = -0.75 - 0.08 (m - 25) + N(0, 0.18), clipped to [0.03, 1.5].
* stars: BT-Settl 2600-7000 K; F277W magnitude from dN/dm ~ 10^(0.15 m) in `star_mag_range`.
* brown dwarfs: BT-Settl 400-2000 K; F444W magnitude uniform in `brown_dwarf_mag_range`.
"""

from __future__ import annotations

import numpy as np

from galscale.config import NIRCAM_BANDS
from galscale.sim.filters import ab_mag, njy_from_ab
from galscale.sim.profiles import sample_morphology
from galscale.sim.seds import GALAXY_TEMPLATES, REF_BAND, colour_model

KINDS: tuple[str, ...] = ("disk", "non_disk", "star", "brown_dwarf")
GALAXY_KINDS = ("disk", "non_disk")


def power_law_mags(n: int, lo: float, hi: float, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitudes in [lo, hi] with dN/dm ~ 10^(slope m) (inverse-CDF sampling)."""
    a = slope * np.log(10.0)
    u = rng.random(n)
    return lo + np.log1p(u * np.expm1(a * (hi - lo))) / a


def galaxy_sizes(mag: np.ndarray, high_z: np.ndarray, rng: np.random.Generator,
                 size_scale: float = 1.0) -> np.ndarray:
    """Half-light radius [arcsec] from a magnitude-size relation with scatter."""
    log_r = -0.75 - 0.08 * (mag - 25.0) + rng.normal(0.0, 0.18, len(mag))
    r = 10.0**log_r * np.where(high_z, 0.6, 1.0) * size_scale
    return np.clip(r, 0.03, 1.5 * size_scale)


def sample_population(
    kinds: np.ndarray,
    z_class: np.ndarray,
    rng: np.random.Generator,
    *,
    bands: tuple[str, ...] = NIRCAM_BANDS,
    galaxy_mag_range: tuple[float, float] = (20.0, 30.0),
    high_z_mag_range: tuple[float, float] = (25.5, 30.0),
    star_mag_range: tuple[float, float] = (18.5, 28.5),
    brown_dwarf_mag_range: tuple[float, float] = (24.0, 28.5),
    size_scale: float = 1.0,
    r_half_range: tuple[float, float] | None = None,
) -> dict[str, np.ndarray]:
    """Truth columns (no positions) for sources of the given kinds and redshift classes.

    `kinds` holds entries of KINDS; `z_class` holds 'low_z' / 'high_z' for galaxies (ignored for
    stars and brown dwarfs). Returns kind, is_disk, redshift, z_class (None for stars),
    sed_template, teff_k, flux_<band> [nJy], mag_<band> [AB], half_light_radius_arcsec and the
    morphology columns of `profiles.sample_morphology` (NaN / False / 0 for point sources).
    `r_half_range` (arcsec), when given, replaces the magnitude-size relation by a log-uniform
    draw (used for large, well-resolved morphology stamps).
    """
    kinds = np.asarray(kinds, dtype=object)
    n = len(kinds)
    bad = sorted({str(k) for k in kinds} - set(KINDS))
    if bad:
        raise ValueError(f"unknown source kinds {bad}; expected {KINDS}")
    cm = colour_model(tuple(bands))
    is_gal = np.isin(kinds, GALAXY_KINDS)
    is_star, is_bd = kinds == "star", kinds == "brown_dwarf"
    zc_in = np.asarray(z_class, dtype=object)
    high = is_gal & (zc_in == "high_z")
    u = rng.random((n, 6))  # fixed draw order for determinism

    z_low = np.minimum(0.1 + rng.gamma(2.0, 0.6, n), 5.5)
    z_high = np.minimum(6.0 - 1.8 * np.log1p(-u[:, 0] * (1 - np.exp(-6.0 / 1.8))), 12.0)
    redshift = np.where(high, z_high, np.where(is_gal, z_low, 0.0))
    # templates: index t mixed with t+1 by weight `mix`
    n_gal_t = len(GALAXY_TEMPLATES)
    t_low = (u[:, 1] * n_gal_t).astype(int)
    t_high = 2 + (u[:, 1] * 1.5).astype(int)
    g_template = np.where(high, t_high, t_low)
    mix = np.where(g_template >= n_gal_t - 1, 0.0, u[:, 2])
    n_star_t, n_bd_t = len(cm.star_teff), len(cm.brown_dwarf_teff)
    s_template = np.minimum((u[:, 3] * n_star_t).astype(int), n_star_t - 1)
    b_template = np.minimum((u[:, 3] * n_bd_t).astype(int), n_bd_t - 1)
    s_mix = np.where(s_template >= n_star_t - 1, 0.0, u[:, 4])
    b_mix = np.where(b_template >= n_bd_t - 1, 0.0, u[:, 4])

    ratios = np.ones((n, len(bands)))
    ratios[is_gal] = cm.galaxy_ratios(g_template[is_gal], mix[is_gal], redshift[is_gal])
    ratios[is_star] = cm.star_ratios(s_template[is_star], s_mix[is_star])
    ratios[is_bd] = cm.brown_dwarf_ratios(b_template[is_bd], b_mix[is_bd])

    m_gal = power_law_mags(n, *galaxy_mag_range, 0.3, rng)
    m_high = power_law_mags(n, *high_z_mag_range, 0.3, rng)
    m_star = power_law_mags(n, *star_mag_range, 0.15, rng)
    m_bd = brown_dwarf_mag_range[0] + (brown_dwarf_mag_range[1] - brown_dwarf_mag_range[0]) * u[:, 5]
    ref_mag = np.where(high, m_high, np.where(is_gal, m_gal, m_star))
    ref_flux = njy_from_ab(ref_mag)  # flux in REF_BAND
    if "F444W" in bands:  # brown dwarfs are normalised in F444W, where they are brightest
        k = bands.index("F444W")
        ref_flux = np.where(is_bd, njy_from_ab(m_bd) / np.maximum(ratios[:, k], 1e-12), ref_flux)
    fluxes = ratios * ref_flux[:, None]

    r_half = galaxy_sizes(ref_mag, high, rng, size_scale)
    if r_half_range is not None:
        lo_r, hi_r = np.log(r_half_range[0]), np.log(r_half_range[1])
        r_half = np.exp(lo_r + (hi_r - lo_r) * rng.random(n))
    r_half = np.where(is_gal, r_half, 0.0)
    morph = sample_morphology(np.where(is_gal, kinds, "non_disk"), r_half, rng)
    point = ~is_gal
    for col in morph.values():
        if col.dtype == bool:
            col[point] = False
        elif col.dtype.kind == "f":
            col[point] = np.nan
        elif col.dtype.kind in "iu":
            col[point] = 0
        else:
            col[point] = "point"
    teff = np.full(n, np.nan)
    teff[is_star] = (cm.star_teff[s_template] * (1 - s_mix)
                     + cm.star_teff[np.minimum(s_template + 1, n_star_t - 1)] * s_mix)[is_star]
    teff[is_bd] = (cm.brown_dwarf_teff[b_template] * (1 - b_mix)
                   + cm.brown_dwarf_teff[np.minimum(b_template + 1, n_bd_t - 1)] * b_mix)[is_bd]
    sed = np.empty(n, dtype=object)
    for i in range(n):
        if is_gal[i]:
            t = g_template[i]
            t2 = GALAXY_TEMPLATES[min(t + 1, n_gal_t - 1)]
            sed[i] = f"CWW {GALAXY_TEMPLATES[t]}+{t2} w={mix[i]:.2f}"
        else:
            sed[i] = f"BT-Settl {teff[i]:.0f}K"
    bd_ref = "F444W" if "F444W" in bands else REF_BAND
    ref_band = np.where(is_bd, bd_ref, REF_BAND).astype(object)
    z_out = np.where(is_gal, np.where(high, "high_z", "low_z"),
                     np.where(is_bd, "brown_dwarf", None)).astype(object)
    cols: dict[str, np.ndarray] = {
        "kind": kinds, "is_disk": kinds == "disk", "redshift": redshift, "z_class": z_out,
        "sed_template": sed, "teff_k": teff, "ref_band": ref_band,
    }
    for j, b in enumerate(bands):
        cols[f"flux_{b}"] = fluxes[:, j]
    for j, b in enumerate(bands):
        cols[f"mag_{b}"] = ab_mag(fluxes[:, j])
    cols["half_light_radius_arcsec"] = r_half
    cols.update(morph)
    return cols
