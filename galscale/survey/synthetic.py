"""A minimal synthetic survey (round/elliptical Gaussian sources + Gaussian noise) for tests.

Kept deliberately simple and fast: it exercises the survey format, tiling, detection and
cutouts with a known truth. The realistic simulator is `galscale.sim`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from galscale.config import NIRCAM_BANDS, NJY_ZEROPOINT_AB
from galscale.survey.store import write_survey

PIXEL_SCALE_ARCSEC = 0.03


def tan_header(shape: tuple[int, int], ra: float = 150.1, dec: float = 2.2,
               pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC) -> dict[str, Any]:
    """FITS cards of a north-up TAN WCS centred on the grid."""
    ny, nx = shape
    d = pixel_scale_arcsec / 3600.0
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRVAL1": ra, "CRVAL2": dec, "CRPIX1": (nx + 1) / 2.0, "CRPIX2": (ny + 1) / 2.0,
        "CD1_1": -d, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": d, "RADESYS": "ICRS",
    }


def gaussian_images(
    shape: tuple[int, int], n_sources: int, seed: int, bands: tuple[str, ...] = NIRCAM_BANDS,
    noise_njy: float = 1.0, min_sep: float = 12.0, edge: float = 3.0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(science, error, truth) for `n_sources` elliptical Gaussians placed at least `min_sep` px
    apart. Truth columns: x, y (0-based pixel centre convention), sigma, q, theta, flux_<BAND>.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    xs: list[float] = []
    ys: list[float] = []
    tries = 0
    while len(xs) < n_sources and tries < 100 * n_sources:
        tries += 1
        x, y = rng.uniform(edge, nx - 1 - edge), rng.uniform(edge, ny - 1 - edge)
        if all((x - a) ** 2 + (y - b) ** 2 >= min_sep**2 for a, b in zip(xs, ys, strict=True)):
            xs.append(x)
            ys.append(y)
    n = len(xs)
    x, y = np.array(xs), np.array(ys)
    sigma = rng.uniform(1.2, 2.5, n)
    q = rng.uniform(0.5, 1.0, n)
    theta = rng.uniform(0, np.pi, n)
    base = 10 ** rng.uniform(0.7, 3.3, n)  # total flux in nJy: matched-filter S/N ~ 3 .. 1000
    truth: dict[str, np.ndarray] = {"x": x, "y": y, "sigma": sigma, "q": q, "theta": theta}
    colour = rng.normal(0, 0.2, (n, len(bands)))
    sci: dict[str, np.ndarray] = {}
    err: dict[str, np.ndarray] = {}
    yy, xx = np.mgrid[0:ny, 0:nx]
    for j, b in enumerate(bands):
        flux = base * 10 ** (-0.4 * colour[:, j])
        truth[f"flux_{b}"] = flux
        img = np.zeros(shape, np.float64)
        for i in range(n):
            r = int(np.ceil(6 * sigma[i]))
            x0, x1 = max(0, int(x[i]) - r), min(nx, int(x[i]) + r + 2)
            y0, y1 = max(0, int(y[i]) - r), min(ny, int(y[i]) + r + 2)
            dx, dy = xx[y0:y1, x0:x1] - x[i], yy[y0:y1, x0:x1] - y[i]
            c, s = np.cos(theta[i]), np.sin(theta[i])
            u, v = c * dx + s * dy, -s * dx + c * dy
            sa, sb = sigma[i], sigma[i] * q[i]
            img[y0:y1, x0:x1] += flux[i] / (2 * np.pi * sa * sb) * np.exp(
                -0.5 * ((u / sa) ** 2 + (v / sb) ** 2))
        sci[b] = (img + rng.normal(0, noise_njy, shape)).astype(np.float32)
        err[b] = np.full(shape, noise_njy, np.float32)
    return sci, err, truth


def make_gaussian_survey(
    url: str, shape: tuple[int, int] = (600, 700), n_sources: int = 60, seed: int = 0,
    chunk: int = 128, bands: tuple[str, ...] = NIRCAM_BANDS, noise_njy: float = 1.0,
    storage_options: dict[str, Any] | None = None, name: str = "gaussian-test",
) -> dict[str, np.ndarray]:
    """Write a synthetic Gaussian-source survey at `url` and return its truth columns."""
    sci, err, truth = gaussian_images(shape, n_sources, seed, bands, noise_njy)
    write_survey(
        url, sci, err, tan_header(shape), pixel_scale_arcsec=PIXEL_SCALE_ARCSEC,
        zeropoint_ab=NJY_ZEROPOINT_AB, bunit="nJy", chunk=chunk, name=name,
        storage_options=storage_options,
    )
    return truth
