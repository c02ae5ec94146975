"""Contaminants and noise for training images (simulated stamps or real JPEG cutouts alike).

`add_contaminants` injects 1-3 unrelated stars or galaxies (GalSim Moffat / Sersic profiles
with random size, shape, colour, brightness and position) into a clean image scaled to [0, 1];
`add_noise` adds sky-like Gaussian noise, signal-dependent (Poisson-like) noise and, at random,
pixel-correlated noise like that of drizzled mosaics. Both take channel-first [C, H, W] (or
[H, W]) float images in [0, 1] of any size and return float32 in [0, 1]; the input is not
modified. They implement the degradation of the denoising paper (seed 001): clean galaxy
images with 1-3 injected contaminants, ten contaminated copies per clean image.
"""

from __future__ import annotations

import galsim
import numpy as np

from galscale.config import DEFAULT_NOISE, NoiseLaw


def _as_chw(image: np.ndarray) -> tuple[np.ndarray, bool]:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        return a[None], True
    if a.ndim != 3:
        raise ValueError(f"expected an image [C, H, W] or [H, W], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("image contains NaN or inf")
    return a, False


def contaminant_profile(rng: np.random.Generator,
                        scale: float) -> tuple[galsim.GSObject, str, float]:
    """A random star (Moffat) or galaxy (Sersic) of unit flux, its kind and its extent (radius
    in pixels holding essentially all of its light); `scale` = image size / 256."""
    if rng.random() < 0.4:
        fwhm = rng.uniform(1.5, 4.0) * scale
        beta = rng.uniform(2.5, 4.5)
        return galsim.Moffat(beta=beta, fwhm=fwhm, trunc=8 * fwhm), "star", 8 * fwhm + 2
    n = float(rng.choice([0.5, 1.0, 1.5, 2.0, 3.0, 4.0]))
    r_half = rng.uniform(2.0, 18.0) * scale
    gal = galsim.Sersic(n=n, half_light_radius=r_half, trunc=5 * r_half)
    gal = gal.shear(q=rng.uniform(0.25, 1.0), beta=rng.uniform(0, 180) * galsim.degrees)
    return gal, "galaxy", 5 * r_half + 2


def add_contaminants(clean: np.ndarray, rng: np.random.Generator,
                     n_range: tuple[int, int] = (1, 3), draw_method: str = "auto") -> np.ndarray:
    """Copy of `clean` ([C, H, W] or [H, W] in [0, 1]) with n_range[0]..n_range[1] contaminants.

    Contaminants avoid the central 12% of the image (where the target galaxy is), have peak
    brightness 0.15-1.0 of the image range and a random colour per channel. `draw_method` is
    GalSim's: "no_pixel" (profile sampled at pixel centres) is ~500x faster than "auto" (which
    picks real-space pixel convolution for truncated Sersics, ~0.5 s per 256x256 contaminant);
    the denoiser's training data uses it.
    """
    lo, hi = int(n_range[0]), int(n_range[1])
    if lo < 0 or hi < lo:
        raise ValueError(f"n_range must be (lo, hi) with 0 <= lo <= hi, got {n_range}")
    img, was_2d = _as_chw(clean)
    c, h, w = img.shape
    out = img.astype(np.float32).copy()
    scale = min(h, w) / 256.0
    for _ in range(int(rng.integers(lo, hi + 1))):
        prof, kind, extent = contaminant_profile(rng, scale)
        while True:
            x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            if np.hypot(x - (w - 1) / 2, y - (h - 1) / 2) >= 0.12 * min(h, w):
                break
        half = int(min(max(h, w), np.ceil(extent)))  # draw on a local stamp, then place it
        ix, iy = int(round(x)), int(round(y))
        stamp = prof.drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=1.0,
                               offset=(x - ix, y - iy), method="no_pixel").array
        peak = float(stamp.max())
        if peak <= 0:
            continue
        colour = rng.uniform(0.4, 1.0, size=c) if kind == "galaxy" else rng.uniform(0.6, 1.0, c)
        colour = colour / colour.max()
        amp = rng.uniform(0.15, 1.0)
        y0, x0 = iy - half, ix - half
        ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + 2 * half + 1, h), min(x0 + 2 * half + 1, w)
        piece = stamp[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32) * np.float32(amp / peak)
        out[:, ya:yb, xa:xb] += piece[None] * colour[:, None, None].astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out[0] if was_2d else out


def add_noise(image: np.ndarray, rng: np.random.Generator,
              law: NoiseLaw = DEFAULT_NOISE,
              poisson_range: tuple[float, float] = (0.0, 0.02),
              correlated_probability: float = 0.5) -> np.ndarray:
    """Copy of `image` ([C, H, W] or [H, W] in [0, 1]) with realistic noise, clipped to [0, 1].

    Per image: background sigma drawn by `law` (`galscale.config.NoiseLaw`); signal-dependent
    variance a * pixel with a ~ U(poisson_range) (Poisson-like); with `correlated_probability`,
    the noise field is smoothed by a 3x3 kernel (like drizzled mosaics) and rescaled to the same
    sigma.
    """
    img, was_2d = _as_chw(image)
    sigma = law.draw_sigma(rng)
    a = rng.uniform(*poisson_range)
    std = np.sqrt(sigma**2 + a * np.clip(img, 0.0, None)).astype(np.float32)
    field = rng.standard_normal(img.shape).astype(np.float32)
    if rng.random() < correlated_probability:
        k = np.array([0.25, 0.5, 0.25], dtype=np.float32)
        padded = np.pad(field, ((0, 0), (1, 1), (1, 1)), mode="reflect")
        sm = k[0] * padded[:, :-2] + k[1] * padded[:, 1:-1] + k[2] * padded[:, 2:]
        sm = k[0] * sm[:, :, :-2] + k[1] * sm[:, :, 1:-1] + k[2] * sm[:, :, 2:]
        field = sm / np.float32(np.sqrt(np.sum(np.outer(k, k) ** 2)))
    out = np.clip(img + std * field, 0.0, 1.0).astype(np.float32)
    return out[0] if was_2d else out
