"""PSF aperture corrections: from a PSF image to the light an aperture misses.

A Kron aperture holds ~90 % of a point source's light at NIRCam's long wavelengths: the
diffraction wings spread the rest over arcseconds. Surveys store each band's PSF encircled
energy (EE) curve in the root attribute `psf_encircled_energy` (`{band: {"radius_arcsec": [...],
"fraction": [...]}}`); photometry then divides each band's aperture flux and error by the EE
at the aperture's circular-equivalent radius. That is the point-source (minimum) correction the
JWST surveys apply; extended galaxies also lose some of their own light beyond the aperture.

The simulator writes the curves of its own PSFs; `galscale ingest --psf BAND=FILE` computes
them from PSF images (e.g. STPSF/WebbPSF models) at ingest. Without curves, fluxes are the
plain aperture sums.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

PSF_ATTR = "psf_encircled_energy"


def encircled_energy(psf: np.ndarray, pixel_scale_arcsec: float, n_radii: int = 48,
                     total_flux: float | None = None) -> dict[str, list[float]]:
    """EE curve of a PSF image about its light centroid: the fraction of `total_flux` (default:
    the image's sum; pass the PSF's true total when the image crops its wings) within radius r,
    at `n_radii` radii from 0.25 px to the image edge (log-spaced), in arcsec. Pixels are split
    5x5 so small radii are not quantised."""
    img = np.clip(np.nan_to_num(np.asarray(psf, dtype=np.float64)), 0.0, None)
    if img.ndim != 2 or img.sum() <= 0 or min(img.shape) < 5:
        raise ValueError(f"a PSF image must be 2-D, at least 5x5 and have positive flux, got "
                         f"shape {img.shape}")
    if pixel_scale_arcsec <= 0:
        raise ValueError(f"pixel scale must be > 0, got {pixel_scale_arcsec}")
    sub = 5
    fine = np.repeat(np.repeat(img, sub, 0), sub, 1) / sub**2
    yy, xx = (np.indices(fine.shape) + 0.5) / sub - 0.5  # sub-pixel centres in pixel units
    total = fine.sum()
    cy, cx = (fine * yy).sum() / total, (fine * xx).sum() / total
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    cumulative = np.cumsum(fine.ravel()[order]) / max(total_flux or total, total)
    r_max = min(cy, cx, img.shape[0] - 1 - cy, img.shape[1] - 1 - cx)
    radii = np.geomspace(0.25, max(r_max, 0.5), n_radii)
    fraction = cumulative[np.clip(np.searchsorted(r[order], radii, side="right") - 1, 0, None)]
    return {"radius_arcsec": (radii * pixel_scale_arcsec).tolist(),
            "fraction": np.maximum.accumulate(fraction).tolist()}


def aperture_correction(curve: Mapping[str, list[float]], radius_arcsec: np.ndarray) -> np.ndarray:
    """Factor (>= 1) to multiply an aperture flux of circular-equivalent radius `radius_arcsec`
    by: 1 / EE(r), interpolated in log radius; 1 beyond the curve's last radius."""
    radii = np.asarray(curve["radius_arcsec"], dtype=np.float64)
    fraction = np.asarray(curve["fraction"], dtype=np.float64)
    r = np.clip(np.asarray(radius_arcsec, dtype=np.float64), radii[0], None)
    ee = np.interp(np.log(r), np.log(radii), fraction, right=1.0)
    return 1.0 / np.clip(ee, 1e-3, 1.0)


def parse_psf_options(options: list[str]) -> dict[str, str]:
    """`["F444W=psf_f444w.fits", ...]` -> {"F444W": "psf_f444w.fits"}, with a clear error."""
    out: dict[str, str] = {}
    for option in options:
        band, sep, path = option.partition("=")
        if not sep or not band or not path:
            raise ValueError(f"--psf takes BAND=FILE (e.g. F444W=psf_f444w.fits), got {option!r}")
        out[band.strip().upper()] = path.strip()
    return out


def curves_from_psf_files(files: Mapping[str, str], pixel_scale_arcsec: float
                          ) -> dict[str, dict[str, list[float]]]:
    """EE curves of PSF FITS images (first image HDU; pixel scale from the PIXELSCL keyword, as
    STPSF writes it, else the survey's)."""
    from astropy.io import fits

    curves = {}
    for band, path in files.items():
        with fits.open(path) as hdus:
            hdu = next((h for h in hdus if h.data is not None and np.ndim(h.data) == 2), None)
            if hdu is None:
                raise ValueError(f"{path}: no 2-D image HDU holding a PSF")
            scale = float(hdu.header.get("PIXELSCL", pixel_scale_arcsec))
            curves[band] = encircled_energy(hdu.data, scale)
    return curves


__all__ = ["PSF_ATTR", "encircled_energy", "aperture_correction", "parse_psf_options",
           "curves_from_psf_files"]
