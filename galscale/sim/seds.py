"""Spectral energy distributions and their colours in the NIRCam bands.

* Galaxies: the Coleman-Wu-Weedman templates E, Sbc, Scd and Im that GalSim ships
  (`galsim.meta_data.share_dir/SEDs/CWW_*_ext.sed`, F_lambda, 91 A - 2.2 um rest). Redward of
  2.2 um rest the templates are continued with a Rayleigh-Jeans tail F_lambda ~ lambda^-4.
  Redshifting stretches the wavelength by (1 + z); the intergalactic medium removes flux
  blueward of Lyman alpha with Madau (1995) Lyman-series optical depths and a hard cut
  (zero) blueward of the Lyman limit 912 A (1 + z).
* Brown dwarfs (Teff 400-2000 K) and ordinary stars (2600-7000 K): BT-Settl model spectra
  (log g = 5) extracted from the MIT-licensed grizli package into
  `galscale/sim/data/brown_dwarf_templates.npz` (see scripts/extract_brown_dwarf_templates.py).

Colours are tabulated once (`ColourModel`) as band fluxes normalised to 1 in the reference band
F277W, so that a source's 7 fluxes are `ref_flux * ratio`. Mixing two adjacent templates with
weight w mixes their normalised ratios linearly, which is exactly the photometry of the mixed
SED, so colours vary continuously between templates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galscale.config import NIRCAM_BANDS
from galscale.sim.filters import band_flux_density, load_throughputs

REF_BAND = "F277W"  # fluxes of every source are normalised in this band
LYA_A = 1215.67
LYMAN_LIMIT_A = 911.8
GALAXY_TEMPLATES: tuple[str, ...] = ("E", "Sbc", "Scd", "Im")  # red to blue
_DATA = Path(__file__).resolve().parent / "data"
# Madau (1995) Lyman-series effective optical depth: tau = A_j (lam_obs / lam_j)^3.46.
_MADAU_LINES = ((1215.67, 3.6e-3), (1025.72, 1.7e-3), (972.54, 1.2e-3), (949.74, 9.3e-4))


def igm_transmission(wave_obs_a: np.ndarray, z: float | np.ndarray) -> np.ndarray:
    """Mean IGM transmission exp(-tau) at observed wavelengths for sources at redshift z.

    `wave_obs_a` and `z` broadcast against each other.
    """
    w = np.asarray(wave_obs_a, dtype=float)
    zz = np.asarray(z, dtype=float)
    w_pow = w**3.46  # tau_j = A_j lam_j^-3.46 * w^3.46: one power for all lines
    coeff = np.zeros(np.broadcast_shapes(w.shape, zz.shape))
    for lam_j, a_j in _MADAU_LINES:
        coeff += np.where(w < lam_j * (1.0 + zz), a_j * lam_j**-3.46, 0.0)
    return np.where(w < LYMAN_LIMIT_A * (1.0 + zz), 0.0, np.exp(-coeff * w_pow))


@functools.cache
def load_galaxy_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(rest wavelength [A], F_lambda) of CWW template `name`, extended to 6 um rest."""
    import galsim

    if name not in GALAXY_TEMPLATES:
        raise ValueError(f"unknown galaxy template {name!r}; choose from {GALAXY_TEMPLATES}")
    path = Path(galsim.meta_data.share_dir) / "SEDs" / f"CWW_{name}_ext.sed"
    data = np.loadtxt(path, comments="#")
    wave, flam = data[:, 0], data[:, 1]
    tail = np.linspace(wave[-1], 60000.0, 200)[1:]
    wave = np.concatenate([wave, tail])
    flam = np.concatenate([flam, flam[-1] * (tail / tail[0]) ** -4.0])
    return wave, flam


@functools.cache
def load_stellar_templates() -> dict[str, np.ndarray]:
    """The committed BT-Settl extract: wave_um, bd_teff, bd_flam, star_teff, star_flam."""
    path = _DATA / "brown_dwarf_templates.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; run scripts/extract_brown_dwarf_templates.py (see its docstring)"
        )
    with np.load(path) as npz:
        return {k: np.asarray(npz[k]) for k in npz.files}


def observed_fnu(wave_rest_a: np.ndarray, flam_rest: np.ndarray, z: float,
                 with_igm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(observed wavelength [A], f_nu in arbitrary units) of a rest-frame F_lambda at z."""
    w_obs = np.asarray(wave_rest_a, dtype=float) * (1.0 + z)
    fnu = np.asarray(flam_rest, dtype=float) * w_obs**2  # f_nu ~ F_lambda lambda^2
    if with_igm:
        fnu = fnu * igm_transmission(w_obs, z)
    return w_obs, fnu


def band_ratios(wave_obs_a: np.ndarray, fnu: np.ndarray,
                bands: tuple[str, ...] = NIRCAM_BANDS) -> np.ndarray:
    """Band fluxes of an observed f_nu (rows of [..., n_wave]) normalised to 1 in REF_BAND."""
    thr = load_throughputs(tuple(dict.fromkeys((*bands, REF_BAND))))
    ref = band_flux_density(wave_obs_a, fnu, thr[REF_BAND])
    out = np.stack([band_flux_density(wave_obs_a, fnu, thr[b]) for b in bands], axis=-1)
    return out / np.asarray(ref)[..., None]


@dataclass(frozen=True)
class ColourModel:
    """Tabulated normalised band fluxes (REF_BAND = 1) of every template family."""

    bands: tuple[str, ...]
    z_grid: np.ndarray  # [n_z]
    galaxy: np.ndarray  # [n_templates, n_z, n_bands]
    brown_dwarf: np.ndarray  # [n_bd, n_bands]
    brown_dwarf_teff: np.ndarray
    star: np.ndarray  # [n_star, n_bands]
    star_teff: np.ndarray

    def galaxy_ratios(self, template: np.ndarray, mix: np.ndarray, z: np.ndarray) -> np.ndarray:
        """[N, n_bands] ratios for template index t mixed with t+1 by weight `mix`, at z."""
        t = np.asarray(template, dtype=int)
        zi = np.clip(np.asarray(z, dtype=float), self.z_grid[0], self.z_grid[-1])
        pos = np.interp(zi, self.z_grid, np.arange(len(self.z_grid)))
        lo = np.minimum(pos.astype(int), len(self.z_grid) - 2)
        frac = (pos - lo)[:, None]

        def at(ti: np.ndarray) -> np.ndarray:
            return self.galaxy[ti, lo] * (1 - frac) + self.galaxy[ti, lo + 1] * frac

        t2 = np.minimum(t + 1, self.galaxy.shape[0] - 1)
        m = np.asarray(mix, dtype=float)[:, None]
        return at(t) * (1 - m) + at(t2) * m

    @staticmethod
    def _mixed(table: np.ndarray, template: np.ndarray, mix: np.ndarray) -> np.ndarray:
        t = np.asarray(template, dtype=int)
        t2 = np.minimum(t + 1, table.shape[0] - 1)
        m = np.asarray(mix, dtype=float)[:, None]
        return table[t] * (1 - m) + table[t2] * m

    def brown_dwarf_ratios(self, template: np.ndarray, mix: np.ndarray) -> np.ndarray:
        """[N, n_bands] ratios of brown dwarfs (template index into brown_dwarf_teff)."""
        return self._mixed(self.brown_dwarf, template, mix)

    def star_ratios(self, template: np.ndarray, mix: np.ndarray) -> np.ndarray:
        """[N, n_bands] ratios of ordinary stars (template index into star_teff)."""
        return self._mixed(self.star, template, mix)


@functools.lru_cache(maxsize=4)
def colour_model(bands: tuple[str, ...] = NIRCAM_BANDS, z_max: float = 16.0,
                 dz: float = 0.02) -> ColourModel:
    """Build (once per process) the colour tables for `bands`."""
    z_grid = np.arange(0.0, z_max + dz / 2, dz)
    thr = load_throughputs(tuple(dict.fromkeys((*bands, REF_BAND))))
    gal = np.empty((len(GALAXY_TEMPLATES), len(z_grid), len(bands)))
    for i, name in enumerate(GALAXY_TEMPLATES):
        wave, flam = load_galaxy_template(name)
        per_band = {}
        for b, t in thr.items():  # vectorised over z: the same integral as band_flux_density
            w_obs = t.wave_a[None, :]
            w_rest = w_obs / (1.0 + z_grid[:, None])
            fnu = np.interp(w_rest, wave, flam) * w_obs**2 * igm_transmission(w_obs, z_grid[:, None])
            weight = t.throughput / t.wave_a
            per_band[b] = np.trapz(fnu * weight, t.wave_a, axis=1) / np.trapz(weight, t.wave_a)
        gal[i] = np.stack([per_band[b] / per_band[REF_BAND] for b in bands], axis=-1)
    st = load_stellar_templates()
    w_um = st["wave_um"].astype(float) * 1e4

    def stellar(flam: np.ndarray) -> np.ndarray:
        return band_ratios(w_um, flam.astype(float) * w_um**2, bands)

    return ColourModel(
        bands=tuple(bands), z_grid=z_grid, galaxy=gal,
        brown_dwarf=stellar(st["bd_flam"]), brown_dwarf_teff=st["bd_teff"].astype(float),
        star=stellar(st["star_flam"]), star_teff=st["star_teff"].astype(float),
    )
