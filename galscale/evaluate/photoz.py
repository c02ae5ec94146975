"""Template-fit photometric redshifts, to find the sources whose redshift the photometry itself
cannot settle (Balmer-break / Lyman-break aliasing).

The paper's sample (seed 002) was selected with quality cuts on the sources' photo-z PDFs, and
its 67 galaxies with bimodal PDFs (Balmer-break aliasing) were scored separately. To compare with
its recall figures we need the same split of our held-out cutouts, made from the photometry
alone and never from the network:

* footprint photometry of each cutout in the seven bands (`galscale.semisupervised.
  cutout_photometry`, the input of `fit_photoz`);
* a chi-square fit of the CWW templates the simulation draws from (E, Sbc, Scd, Im and their
  mixtures in steps of `TEMPLATE_MIX_STEP`), redshifted with IGM absorption
  (`galscale.sim.seds.colour_model`) over z = 0-16, free non-negative amplitude, with a
  fractional template error added to the flux errors as photo-z codes do (EAZY);
* the best fit on each side of the class boundary `Z_BOUNDARY` (between the simulation's low-z
  cap 5.5 and high-z floor 6.0). A source is *aliased* when the two differ by less than
  `ALIAS_DELTA_CHI2` = 4, the criterion JADES uses to accept a high-z solution over the best
  low-z one (Hainline et al. 2024): neither redshift is preferred by the photometry.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from galscale.config import NIRCAM_BANDS

Z_BOUNDARY = 5.75
ALIAS_DELTA_CHI2 = 4.0
TEMPLATE_ERROR = 0.05  # fractional, added in quadrature to each band's flux error
TEMPLATE_MIX_STEP = 0.25


@dataclass(frozen=True)
class PhotozFit:
    """Per-source results of `fit_photoz`."""

    z_best: np.ndarray  # [N] redshift of the overall best fit (NaN without photometry)
    chi2_low: np.ndarray  # [N] best chi-square with z < Z_BOUNDARY
    chi2_high: np.ndarray  # [N] best chi-square with z >= Z_BOUNDARY
    p_high: np.ndarray  # [N] flat-prior probability mass at z >= Z_BOUNDARY

    def aliased_at(self, delta_chi2: float) -> np.ndarray:
        """Neither side of the boundary preferred by at least `delta_chi2`."""
        delta = np.abs(self.chi2_low - self.chi2_high)
        return ~(delta >= delta_chi2)  # NaN (no photometry) counts as aliased

    @property
    def aliased(self) -> np.ndarray:
        """`aliased_at` the adopted criterion, ALIAS_DELTA_CHI2."""
        return self.aliased_at(ALIAS_DELTA_CHI2)


@functools.lru_cache(maxsize=2)
def template_grid(bands: tuple[str, ...] = NIRCAM_BANDS) -> tuple[np.ndarray, np.ndarray]:
    """(z grid [Z], model band fluxes [T, Z, B]) of the CWW templates and their mixtures."""
    from galscale.sim.seds import colour_model

    cm = colour_model(bands)
    weights = np.arange(0.0, 1.0, TEMPLATE_MIX_STEP)
    models = [cm.galaxy[t] * (1 - w) + cm.galaxy[t + 1] * w
              for t in range(cm.galaxy.shape[0] - 1) for w in weights]
    models.append(cm.galaxy[-1])
    return cm.z_grid, np.stack(models)


def fit_photoz(flux: np.ndarray, flux_err: np.ndarray, bands: tuple[str, ...] = NIRCAM_BANDS,
               chunk: int = 256) -> PhotozFit:
    """Fit the template grid to band fluxes [N, B] with 1-sigma errors (missing bands: NaN flux
    or non-positive / non-finite error, left out of the fit)."""
    z, grid = template_grid(tuple(bands))
    flux = np.asarray(flux, dtype=np.float64)
    err = np.asarray(flux_err, dtype=np.float64)
    use = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    f = np.where(use, flux, 0.0)
    var = err**2 + (TEMPLATE_ERROR * np.clip(f, 0.0, None)) ** 2
    ivar = np.where(use, 1.0 / np.where(use, var, 1.0), 0.0)
    high = z >= Z_BOUNDARY
    n = len(f)
    z_best, chi_lo, chi_hi, p_high = (np.full(n, np.nan) for _ in range(4))
    for s in range(0, n, chunk):
        fi, wi = f[s:s + chunk, None, None, :], ivar[s:s + chunk, None, None, :]
        num = (fi * grid * wi).sum(-1)  # [n, T, Z]
        den = (grid**2 * wi).sum(-1)
        amp = np.clip(num / np.where(den > 0, den, 1.0), 0.0, None)
        chi2 = ((fi - amp[..., None] * grid) ** 2 * wi).sum(-1).min(axis=1)  # [n, Z]
        ok = use[s:s + chunk].any(axis=1)
        best = chi2.min(axis=1)
        like = np.exp(-0.5 * (chi2 - best[:, None]))
        sl = slice(s, s + len(fi))
        z_best[sl] = np.where(ok, z[chi2.argmin(axis=1)], np.nan)
        chi_lo[sl] = np.where(ok, chi2[:, ~high].min(axis=1), np.nan)
        chi_hi[sl] = np.where(ok, chi2[:, high].min(axis=1), np.nan)
        p_high[sl] = np.where(ok, like[:, high].sum(axis=1) / like.sum(axis=1), np.nan)
    return PhotozFit(z_best=z_best, chi2_low=chi_lo, chi2_high=chi_hi, p_high=p_high)


__all__ = ["Z_BOUNDARY", "ALIAS_DELTA_CHI2", "TEMPLATE_ERROR", "PhotozFit", "template_grid",
           "fit_photoz"]
