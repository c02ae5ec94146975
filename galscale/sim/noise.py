"""NIRCam-like pixel noise in nJy/pixel: sky + Poisson + read noise, and the matching 1-sigma map.

Per band, the background sigma per pixel follows from the 5-sigma point-source depth in a
0.3"-diameter aperture: sigma_bkg = f_5sigma / (5 sqrt(N_pix)). The sky level B (zodiacal light,
`SKY_MJY_SR`) sets the gain g [electrons per nJy/pixel] so that sky Poisson noise supplies
(1 - READ_FRACTION) of the background variance and read noise the rest. A source adds Poisson
variance S / g. Counts are hundreds of electrons per pixel, so the Poisson noise is drawn in its
Gaussian limit: pixel = S + sqrt(sigma_bkg^2 + S / g) * N(0, 1); the sky is subtracted, as in
reduced mosaics. The error map is that expected sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galscale.sim.filters import njy_from_ab

# Approximate NIRCam background (zodiacal + thermal) in MJy/sr at the ecliptic-latitude of
# deep fields (JWST ETC "medium" background).
SKY_MJY_SR: dict[str, float] = {
    "F090W": 0.13, "F115W": 0.14, "F150W": 0.15, "F200W": 0.14,
    "F277W": 0.12, "F356W": 0.13, "F444W": 0.30,
}
READ_FRACTION = 0.15  # share of the background variance from read noise
DEPTH_APERTURE_DIAMETER_ARCSEC = 0.3
_NJY_PER_MJY_SR_ARCSEC2 = 1e15 / (180.0 / np.pi * 3600.0) ** 2  # nJy per (MJy/sr * arcsec^2)


@dataclass(frozen=True)
class BandNoise:
    """Noise parameters of one band (all in nJy/pixel)."""

    band: str
    sigma_bkg: float  # background 1-sigma per pixel (sky Poisson + read noise)
    sky: float  # sky level that was subtracted
    gain: float  # electrons per nJy/pixel

    def sigma(self, signal: np.ndarray) -> np.ndarray:
        """Expected 1-sigma per pixel for a noiseless signal (float32)."""
        s = np.maximum(signal, 0.0, dtype=np.float32)
        return np.sqrt(np.float32(self.sigma_bkg**2) + s / np.float32(self.gain))

    def add(self, signal: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(noisy image, error map), float32, for a noiseless signal in nJy/pixel."""
        err = self.sigma(signal)
        noisy = signal.astype(np.float32) + err * rng.standard_normal(signal.shape, np.float32)
        return noisy, err


def band_noise(band: str, depth_ab: float, pixel_scale_arcsec: float) -> BandNoise:
    """Noise parameters for a band of 5-sigma depth `depth_ab` at the given pixel scale."""
    if band not in SKY_MJY_SR:
        raise ValueError(f"no sky level for band {band!r}")
    n_pix = np.pi * (0.5 * DEPTH_APERTURE_DIAMETER_ARCSEC / pixel_scale_arcsec) ** 2
    sigma = float(njy_from_ab(depth_ab)) / (5.0 * np.sqrt(n_pix))
    sky = SKY_MJY_SR[band] * _NJY_PER_MJY_SR_ARCSEC2 * pixel_scale_arcsec**2
    gain = sky / ((1.0 - READ_FRACTION) * sigma**2)
    return BandNoise(band=band, sigma_bkg=sigma, sky=sky, gain=gain)
