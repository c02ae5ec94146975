"""NIRCam wide-band throughputs and synthetic AB photometry.

The throughput curves are the post-flight NIRCam (filter + optics + QE) curves shipped with the
MIT-licensed package astro-sedpy (`sedpy/data/filters/jwst_<band>.par`); they are read as plain
two-column text, so nothing is downloaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galscale.config import NIRCAM_BANDS, NJY_ZEROPOINT_AB


@dataclass(frozen=True)
class Throughput:
    """One band's photon-to-electron efficiency on a wavelength grid (Angstrom)."""

    band: str
    wave_a: np.ndarray
    throughput: np.ndarray

    @property
    def pivot_a(self) -> float:
        """Pivot wavelength: sqrt(int T lam dlam / int T / lam dlam)."""
        w, t = self.wave_a, self.throughput
        return float(np.sqrt(np.trapz(t * w, w) / np.trapz(t / w, w)))


def sedpy_filter_dir() -> Path:
    """Folder of astro-sedpy's filter files."""
    import sedpy

    return Path(sedpy.__file__).resolve().parent / "data" / "filters"


@functools.cache
def load_throughput(band: str) -> Throughput:
    """Read `band` (e.g. 'F200W') from astro-sedpy; ValueError when it does not ship it."""
    path = sedpy_filter_dir() / f"jwst_{band.lower()}.par"
    if not path.is_file():
        raise ValueError(f"no NIRCam throughput for band {band!r} (looked for {path})")
    data = np.loadtxt(path, comments="#")
    wave, thr = data[:, 0].astype(float), np.clip(data[:, 1].astype(float), 0.0, None)
    keep = thr > 1e-4 * thr.max()  # drop the long zero tails so integrals use a tight grid
    lo, hi = np.argmax(keep), len(keep) - np.argmax(keep[::-1])
    return Throughput(band, wave[max(lo - 1, 0):hi + 1], thr[max(lo - 1, 0):hi + 1])


def load_throughputs(bands: tuple[str, ...] = NIRCAM_BANDS) -> dict[str, Throughput]:
    """Throughputs of several bands, in the given order."""
    return {b: load_throughput(b) for b in bands}


def band_flux_density(wave_a: np.ndarray, f_nu: np.ndarray, thr: Throughput) -> np.ndarray:
    """Band-averaged f_nu seen by a photon-counting detector (same units as `f_nu`).

    <f_nu> = int f_nu T dlam/lam / int T dlam/lam, the AB-magnitude definition. `f_nu` may be
    [..., n_wave]; the SED is interpolated onto the throughput grid (zero outside its range).
    """
    f = np.asarray(f_nu, dtype=float)
    w = thr.wave_a
    flat = f.reshape(-1, f.shape[-1])
    on_grid = np.stack([np.interp(w, wave_a, row, left=0.0, right=0.0) for row in flat])
    weight = thr.throughput / w
    num = np.trapz(on_grid * weight, w, axis=-1)
    return (num / np.trapz(weight, w)).reshape(f.shape[:-1])


def ab_mag(flux_njy: np.ndarray | float) -> np.ndarray:
    """AB magnitude of a flux density in nJy (inf for flux <= 0)."""
    f = np.asarray(flux_njy, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, NJY_ZEROPOINT_AB - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.inf)


def njy_from_ab(mag: np.ndarray | float) -> np.ndarray:
    """Flux density in nJy of an AB magnitude."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - NJY_ZEROPOINT_AB))
