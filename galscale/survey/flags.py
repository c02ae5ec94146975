"""Source quality flags: the `flags` bit mask and `flag_reason` text of every catalog row.

A row is never dropped for bad data; it is kept with a bit set here and a human-readable
reason (`;`-separated `name: detail` items).
"""

from __future__ import annotations

from enum import IntFlag

import numpy as np


class Flag(IntFlag):
    """Bits of the catalog `flags` column."""

    EDGE = 1  # a cutout crosses the survey edge (padded)
    MASKED = 2  # a cutout contains NaN / zero-weight pixels (padded); see masked_fraction
    MISSING_DATA = 4  # a Zarr chunk under the tile was missing or corrupt
    BLENDED = 8  # SEP deblended this object from a neighbour
    TRUNCATED = 16  # photometry aperture truncated by the tile/survey edge or masked pixels
    OFF_SURVEY = 32  # catalog position outside the survey pixel grid (or not projectable)
    NO_DATA = 64  # centroid on a pixel without data: fluxes are NaN
    BAND_MISSING = 128  # one or more bands absent from the survey: their fluxes are NaN
    LOW_SNR = 256  # detection-stack S/N below 5
    DUPLICATE_INPUT_ID = 2048  # the position catalog (--sources) repeats this row's id
    # set by the model stage (galscale.pipeline.inference)
    NO_MORPHOLOGY = 512  # morphology cutout unusable (non-finite or fully masked): p_disk NaN
    BANDS_ZEROED = 1024  # the redshift-class CNN saw bands without valid data, zeroed


def add_flag(flags: np.ndarray, reasons: list[list[str]], index: int | np.ndarray, flag: Flag,
             detail: str = "") -> None:
    """Set `flag` on rows `index` and append its reason text (in place)."""
    for i in np.atleast_1d(np.arange(len(flags))[index]):
        flags[i] |= int(flag)
        text = flag.name.lower() + (f": {detail}" if detail else "")
        if text not in reasons[i]:
            reasons[i].append(text)


def join_reasons(reasons: list[list[str]]) -> np.ndarray:
    """Reason lists -> object array of `;`-joined strings ("" when clean)."""
    return np.array(["; ".join(r) for r in reasons], dtype=object)


__all__ = ["Flag", "add_flag", "join_reasons"]
