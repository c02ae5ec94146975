"""The CPU stage of the survey job: one tile in, one row per owned source (with cutouts) out.

`process_tile` wraps `galscale.survey.extract.extract_tile` (read the tile once, find the
sources it owns, measure them, cut the cutouts) for Ray Data. It never raises: a tile that
cannot be processed becomes one status row with the reason, so one bad tile cannot stop a
survey run.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

import numpy as np

from galscale.config import (
    SurveyJobConfig,
)
from galscale.pipeline.ledger import STATUS_EMPTY, STATUS_FAILED, STATUS_OK
from galscale.survey.extract import extract_tile
from galscale.survey.sources import project_positions, read_position_table
from galscale.survey.store import Survey
from galscale.survey.tiling import Tile

_POSITIONS_CACHE: dict[str, dict[str, np.ndarray]] = {}


def _positions(cfg: SurveyJobConfig, survey: Survey, options: dict[str, Any]) -> dict[str, np.ndarray]:
    """The projected position catalog, read once per worker process."""
    if cfg.sources not in _POSITIONS_CACHE:
        table = read_position_table(cfg.sources, storage_options=options)
        _POSITIONS_CACHE[cfg.sources] = project_positions(table, survey)
    return _POSITIONS_CACHE[cfg.sources]


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # outside Ray (tests, the plain baseline)
        return ""


def process_tile(batch: dict[str, np.ndarray], survey: Survey, cfg: SurveyJobConfig,
                 board: Any = None) -> dict[str, np.ndarray]:
    """Ray Data batch function: a batch of one tile description -> rows of its owned sources.

    The tile's outcome (ok / empty / failed with the reason, seconds spent) goes to `board`
    (a `TileStatusBoard` actor handle) when given; a failed tile returns no rows.
    """
    from galscale.pipeline.job import storage_options_for

    started = time.perf_counter()
    node_id = _node_id()
    tile = Tile(**{k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in batch.items()})
    try:
        positions = _positions(cfg, survey, storage_options_for(cfg)) if cfg.sources else None
        rows = extract_tile(survey, tile, detection=cfg.detection, positions=positions,
                            cutouts=cfg.cutouts)
    except Exception as exc:  # one bad tile must not stop the survey: report it with its reason
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if board is not None:
            board.report.remote(tile.tile_id, STATUS_FAILED, detail[:2000],
                                time.perf_counter() - started, 0, node_id)
        return {}
    n = len(rows["source_id"])
    seconds = time.perf_counter() - started
    if board is not None:
        board.report.remote(tile.tile_id, STATUS_OK if n else STATUS_EMPTY, "", seconds, n,
                            node_id)
    rows["tile_n_sources"] = np.full(n, n, np.int64)
    return rows
