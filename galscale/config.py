"""The one typed place for galscale's constants and configuration defaults.

Defaults work on a laptop (2 CPU cores, no GPU). Every command-line option maps onto a field
here, so a job's full configuration can be written into catalog provenance as JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

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
    threshold_sigma: float = 1.5
    min_area: int = 5
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005


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
    "NIRCAM_BANDS", "PIVOT_UM", "MORPHOLOGY_BANDS", "REDSHIFT_CLASSES", "NJY_ZEROPOINT_AB",
    "MORPH_CUTOUT", "MULTIBAND_CUTOUT", "TilingConfig", "DetectionConfig",
    "to_json_dict", "config_json", "field",
]
