"""The one typed place for galscale's constants and configuration defaults.

Defaults work on a laptop (2 CPU cores, no GPU). Every command-line option maps onto a field
here, so a job's full configuration can be written into catalog provenance as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# The seven NIRCam wide bands, blue to red. Cutout channel order always follows this tuple.
NIRCAM_BANDS: tuple[str, ...] = ("F090W", "F115W", "F150W", "F200W", "F277W", "F356W", "F444W")

# Pivot wavelengths in micron (JWST user documentation).
PIVOT_UM: dict[str, float] = {
    "F090W": 0.901, "F115W": 1.154, "F150W": 1.501, "F200W": 1.990,
    "F277W": 2.786, "F356W": 3.563, "F444W": 4.421,
}

# Bands of the 3-channel morphology cutout, as (R, G, B) channels 0, 1, 2.
MORPHOLOGY_BANDS: tuple[str, ...] = ("F277W", "F200W", "F150W")

REDSHIFT_CLASSES: tuple[str, ...] = ("low_z", "high_z", "brown_dwarf")

# Survey pixel units: flux density per pixel in nJy, so AB magnitude = 31.4 - 2.5 log10(flux).
NJY_ZEROPOINT_AB = 31.4

MORPH_CUTOUT = 256  # pixels, 3-channel morphology cutout (seed 001)
MULTIBAND_CUTOUT = 64  # pixels, 7-band redshift-class cutout (seed 002)


@dataclass(frozen=True)
class TilingConfig:
    """How a survey is split into units of work."""

    tile_size: int = 2048  # pixels, including the margin
    margin: int = 128  # pixels; must be >= half the largest cutout (MORPH_CUTOUT // 2)


@dataclass(frozen=True)
class DetectionConfig:
    """Source detection on the inverse-variance-weighted stack of `bands`."""

    bands: tuple[str, ...] = ("F150W", "F200W", "F277W", "F356W", "F444W")
    # defaults for JWST-like deep fields: see docs/survey-format.md ("Detection defaults")
    threshold_sigma: float = 2.2  # per-pixel S/N of the 3x3-filtered stack
    min_area: int = 8  # connected pixels above threshold
    deblend_nthresh: int = 32
    deblend_cont: float = 1e-4  # faint galaxies next to 10^4 x brighter ones still split
    filter_fwhm_arcsec: float = 0.0  # Gaussian matched-filter FWHM; 0: SEP's 3x3 kernel
    clean: bool = True
    clean_param: float = 1.0
    # local background of the detection image (a median-filtered map of 8 px bin medians, this
    # wide), subtracted before extraction only: it removes the extended halos of bright galaxies
    # so that faint neighbours separate; 0 turns it off. Measurements use the mosaics as they are.
    background_box_px: int = 72


@dataclass(frozen=True)
class NoiseLaw:
    """How `add_noise` draws each image's background sigma (picture units, [0, 1] scale):
    uniformly in [sigma_min, sigma_max], or uniformly in log sigma (every factor of noise
    equally represented, so a wide range still holds mild noise).

    The default, log-uniform 0.01-0.24 (a galaxy's brightest pixel at S/N ~4-100), is the law the
    shipped morphology models were trained under: seed 001's galaxies are faint JWST ones, and
    denoising pays as the noise grows (docs/morphology.md)."""

    sigma_min: float = 0.01
    sigma_max: float = 0.24
    log_uniform: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {self.sigma_min}, "
                             f"{self.sigma_max}")

    def draw_sigma(self, rng: np.random.Generator) -> float:
        """One background sigma (one draw of `rng` whatever the law)."""
        if self.log_uniform:
            return math.exp(rng.uniform(math.log(self.sigma_min), math.log(self.sigma_max)))
        return float(rng.uniform(self.sigma_min, self.sigma_max))


DEFAULT_NOISE = NoiseLaw()


# 5-sigma point-source depth (AB) of simulated surveys, background-limited, in a 0.3"-diameter
# aperture: roughly JADES-medium NIRCam depths.
SIM_DEPTH_AB: dict[str, float] = {
    "F090W": 29.0, "F115W": 29.2, "F150W": 29.3, "F200W": 29.4,
    "F277W": 29.6, "F356W": 29.6, "F444W": 29.3,
}


@dataclass(frozen=True)
class SimConfig:
    """A synthetic NIRCam survey field (`galscale simulate`; see docs/simulation.md)."""

    size: int = 4096  # pixels per side of the square field
    n_sources: int = 3000
    seed: int = 0
    bands: tuple[str, ...] = NIRCAM_BANDS
    pixel_scale_arcsec: float = 0.03
    ra_deg: float = 53.16  # field centre (GOODS-South-like)
    dec_deg: float = -27.78
    depth_ab: dict[str, float] = field(default_factory=lambda: dict(SIM_DEPTH_AB))
    # fractions of disk galaxies, non-disk galaxies, stars, brown dwarfs
    kind_fractions: tuple[float, float, float, float] = (0.47, 0.43, 0.06, 0.04)
    high_z_fraction: float = 0.10  # of galaxies, at z = 6-12
    galaxy_mag_range: tuple[float, float] = (20.0, 30.0)  # F277W AB of low-z galaxies
    chunk: int = 1024  # Zarr chunk side
    name: str = "galscale-sim"


@dataclass(frozen=True)
class SpectralEmbeddingConfig:
    """UMAP + Gaussian-mixture settings of the spectral embedding (seed 003)."""

    umap_neighbors: int = 15
    umap_min_dist: float = 0.0  # 0 packs clusters tightly: best for clustering the map
    umap_sample: int = 100_000  # UMAP is fitted on at most this many spectra; the rest transformed
    umap_backend: str = "auto"  # "auto" (cuML on GPU, else umap-learn), "cuml", "umap-learn"
    k_min: int = 5
    k_max: int = 15
    gmm_restarts: int = 5
    silhouette_sample: int = 5000
    seed: int = 0
    # Spectra whose log10 reconstruction MSE lies more than this many robust standard deviations
    # (1.4826 MAD) above the fit set's median are flagged (noise/artifact dominated) and left out
    # of the UMAP fit and the clusters; 0 disables the flag.
    recon_flag_nsigma: float = 3.0


JOB_STAGES: tuple[str, ...] = ("morphology", "redshift", "spectra")


MORPH_STRETCH_SOFTENING = 0.02  # asinh softening as a fraction of the peak (= galscale.sim)

# P(disk) means something only for resolved, well-detected galaxies: measured flux radius at
# least twice the F277W PSF FWHM (0.092") and S/N >= 20. On simulated survey cutouts the shipped
# models' P(disk) is near chance below this (docs/morphology.md); the catalog's
# `morph_resolved` column and the truth comparison use these same numbers.
RESOLVED_MIN_RADIUS_ARCSEC = 0.2
RESOLVED_MIN_SNR = 20.0


@dataclass(frozen=True)
class CutoutConfig:
    """Cutout sizes, bands, the morphology stretch and framing (`galscale.survey.cutouts`)."""

    multiband_size: int = MULTIBAND_CUTOUT
    multiband_bands: tuple[str, ...] = NIRCAM_BANDS
    morph_size: int = MORPH_CUTOUT
    morph_bands: tuple[str, ...] = MORPHOLOGY_BANDS
    softening: float = MORPH_STRETCH_SOFTENING  # s = softening x peak
    peak_box: int = 16  # the peak is the brightest pixel of the central peak_box^2 (all channels)
    morph_side_per_radius: float | None = 16.0  # frame side / flux radius; None: native pixels
    morph_min_side_px: float = 32.0  # smallest framed side, in native pixels
    resolved_min_radius_arcsec: float = RESOLVED_MIN_RADIUS_ARCSEC  # `morph_resolved` column
    resolved_min_snr: float = RESOLVED_MIN_SNR

    def __post_init__(self) -> None:
        if self.morph_side_per_radius is not None and self.morph_side_per_radius <= 0:
            raise ValueError("morph_side_per_radius must be > 0, or None for native pixels")
        if not 0 < self.morph_min_side_px <= self.morph_size:
            raise ValueError(f"morph_min_side_px must be in (0, {self.morph_size}]")


@dataclass(frozen=True)
class SurveyJobConfig:
    """The survey job (`galscale classify`, `jobs/classify_survey.py`).

    Written into every catalog's provenance, so it must never hold credentials: S3 keys come
    from the standard AWS environment variables or the machine's role, never from here.
    """

    survey: str  # Zarr survey: local path or s3://bucket/field.zarr
    out: str  # run folder: local path or s3://bucket/prefix
    run_id: str = "run"  # a rerun with the same run id and out skips finished tiles
    tiling: TilingConfig = TilingConfig()
    detection: DetectionConfig = DetectionConfig()
    cutouts: CutoutConfig = CutoutConfig()
    stages: tuple[str, ...] = ("morphology", "redshift")  # + "spectra" when spectra are given
    sources: str | None = None  # catalog of RA/Dec (Parquet/FITS/CSV) instead of detection
    spectra: str | None = None  # spectra table (Parquet) or folder of DJA FITS spectra
    spectra_redshifts: str | None = None  # catalog with redshifts for FITS spectra
    denoiser: str = "denoiser"  # artefact folders or shipped names (galscale/weights/)
    morphology: str = "morphology"
    redshift: str = "redshift"
    spectral: str = "spectral"
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 64  # cutouts per model batch
    num_model_actors: int = 1  # model-stage actors (one per GPU on a GPU cluster)
    cpus_per_model_actor: float = 1.0
    # torch threads per model actor; 0: all cores of its node when there is one model actor
    # (Ray would give it only cpus_per_model_actor threads, leaving cores idle), else
    # cpus_per_model_actor
    model_threads: int = 0
    storage_endpoint: str | None = None  # S3-compatible endpoint URL (or AWS_ENDPOINT_URL)
    max_tiles: int = 0  # 0: all; else only the first N pending tiles (quick looks, tests)

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(JOB_STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; choose from {JOB_STAGES}")
        if "spectra" in self.stages and not self.spectra:
            raise ValueError("the spectra stage needs --spectra (a spectra table or folder)")
        if self.batch_size < 1 or self.num_model_actors < 1:
            raise ValueError("batch_size and num_model_actors must be >= 1")
        if self.model_threads < 0:
            raise ValueError("model_threads must be >= 0 (0: automatic)")


def to_json_dict(obj: Any) -> Any:
    """Plain-JSON view of a (nested) config dataclass, for provenance."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_json_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json_dict(v) for k, v in obj.items()}
    return obj


def config_json(obj: Any) -> str:
    """Stable JSON string of a config object (sorted keys)."""
    return json.dumps(to_json_dict(obj), sort_keys=True)


__all__ = [
    "SpectralEmbeddingConfig",
    "NIRCAM_BANDS", "PIVOT_UM", "MORPHOLOGY_BANDS", "REDSHIFT_CLASSES", "NJY_ZEROPOINT_AB",
    "MORPH_CUTOUT", "MULTIBAND_CUTOUT", "MORPH_STRETCH_SOFTENING", "RESOLVED_MIN_RADIUS_ARCSEC",
    "RESOLVED_MIN_SNR", "TilingConfig", "DetectionConfig",
    "CutoutConfig", "SimConfig",
    "SIM_DEPTH_AB",
    "JOB_STAGES", "SurveyJobConfig", "to_json_dict", "config_json", "field",
]
