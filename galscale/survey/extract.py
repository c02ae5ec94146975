"""One tile, end to end without models: read its pixels once, find its sources, cut them out.

`extract_tile` is what a pipeline worker calls per tile. It never raises for bad data inside the
tile: missing/corrupt chunks become NaN pixels and a MISSING_DATA flag on the sources they touch,
absent bands become NaN fluxes with BAND_MISSING; only a survey-wide problem (no detection band
at all) raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from galscale.config import NIRCAM_BANDS, DetectionConfig
from galscale.survey.cutouts import CutoutConfig, make_cutouts, morphology_resolved
from galscale.survey.flags import Flag, add_flag
from galscale.survey.sources import catalog_sources, detect_sources
from galscale.survey.store import Survey, SurveyBlock
from galscale.survey.tiling import Tile

CUTOUT_COLUMNS = ("multiband_flux", "multiband_err", "morph_cutout")


def read_tile(survey: Survey, tile: Tile, bands: Sequence[str]) -> SurveyBlock:
    """The tile's outer-bounds pixels of the requested bands present in the survey."""
    present = [b for b in dict.fromkeys(bands) if b in survey.bands]
    return survey.read_block(present, tile.y0, tile.y1, tile.x0, tile.x1)


def extract_tile(survey: Survey, tile: Tile, *, detection: DetectionConfig | None = None,
                 positions: Mapping[str, np.ndarray] | None = None,
                 bands: Sequence[str] = NIRCAM_BANDS,
                 cutouts: CutoutConfig | None = None) -> dict[str, Any]:
    """Catalog columns + cutout arrays for the sources `tile` owns.

    Sources come from SEP detection (`detection`), or from `positions`
    (`sources.project_positions` output) when given. Returns a dict of NumPy columns: the
    `sources` columns plus masked_fraction, morph_masked_fraction, morph_resolved, and the cutouts
    multiband_flux / multiband_err [N, 7, 64, 64] and morph_cutout [N, 3, 256, 256].
    """
    detection = detection or DetectionConfig()
    cutouts = cutouts or CutoutConfig()
    needed = list(bands) + list(detection.bands) + list(cutouts.multiband_bands) + list(
        cutouts.morph_bands)
    block = read_tile(survey, tile, needed)
    if positions is None:
        cols = detect_sources(survey, block, tile, detection, bands)
    else:
        cols = catalog_sources(survey, block, positions, tile, detection, bands)
    n = len(cols["source_id"])
    cut = make_cutouts(block, cols["x"], cols["y"], survey.shape, cutouts)
    flags = cols["flags"]
    reasons = [r.split("; ") if r else [] for r in cols["flag_reason"]]
    add_flag(flags, reasons, cut.edge, Flag.EDGE, "cutout crosses the survey edge")
    add_flag(flags, reasons, cut.outside_block & ~cut.edge, Flag.EDGE,
             "cutout crosses the tile block (margin too small)")
    masked = (cut.masked_fraction > 0) | (cut.morph_masked_fraction > 0)
    for i in np.flatnonzero(masked):
        add_flag(flags, reasons, i, Flag.MASKED,
                 f"{cut.masked_fraction[i]:.3f} of 7-band, "
                 f"{cut.morph_masked_fraction[i]:.3f} of morphology cutout padded")
    if block.problems and n:
        add_flag(flags, reasons, masked, Flag.MISSING_DATA, ", ".join(block.problems))
    if n:
        fx = np.where(np.isfinite(cols["x"]), cols["x"], block.x0)
        fy = np.where(np.isfinite(cols["y"]), cols["y"], block.y0)
        px = np.clip(np.floor(fx + 0.5).astype(np.int64) - block.x0, 0, block.shape[1] - 1)
        py = np.clip(np.floor(fy + 0.5).astype(np.int64) - block.y0, 0, block.shape[0] - 1)
        centre = block.sci[:, py, px] if block.bands else np.full((1, n), np.nan)
        no_data = ~np.isfinite(centre).any(axis=0)
        add_flag(flags, reasons, no_data & ((flags & int(Flag.OFF_SURVEY)) == 0), Flag.NO_DATA,
                 "no band has data at the centroid pixel")
    cols["flags"] = flags
    cols["flag_reason"] = np.array(["; ".join(r) for r in reasons], dtype=object)
    cols["masked_fraction"] = cut.masked_fraction
    cols["morph_masked_fraction"] = cut.morph_masked_fraction
    cols["morph_resolved"] = morphology_resolved(cols["flux_radius"], cols["snr"],
                                                 survey.pixel_scale_arcsec, cutouts)
    cols["multiband_flux"] = cut.multiband_flux
    cols["multiband_err"] = cut.multiband_err
    cols["morph_cutout"] = cut.morph
    return cols


__all__ = ["extract_tile", "read_tile", "CUTOUT_COLUMNS"]
