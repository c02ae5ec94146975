"""Bookkeeping of the survey job's tiles: reassembling rows per tile, and each tile's outcome.

Ray Data streams rows of many tiles through the model stage in any order and any batching.
Every row carries its tile id and the number of rows that tile emitted (`tile_n_sources`), so
`TileLedger` can tell when a tile is complete and hand it to the writer exactly once. Tiles
with no rows (empty or failed) report their outcome to a `TileStatusBoard` actor instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

STATUS_OK = "ok"
STATUS_EMPTY = "empty"
STATUS_FAILED = "failed"

# Bookkeeping columns that travel with rows but do not belong in the catalog.
LEDGER_COLUMNS = ("tile_n_sources", "model_seconds")


@dataclass
class CompletedTile:
    """A tile whose rows have all arrived, sorted by source id."""

    tile_id: str
    table: pa.Table  # catalog rows, bookkeeping columns removed
    model_seconds: float  # time the model stage spent on its rows


@dataclass
class TileLedger:
    """Collects rows per tile and hands back each tile once it is complete."""

    _parts: dict[str, list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    _counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    completed_ids: set[str] = field(default_factory=set)

    def add(self, batch: pa.Table) -> list[CompletedTile]:
        """Add a batch of model-stage rows; return the tiles this batch completed."""
        done: list[CompletedTile] = []
        if batch.num_rows == 0:
            return done
        tile_ids = np.asarray(batch.column("tile_id").to_pylist(), dtype=object)
        for tile_id in dict.fromkeys(tile_ids):  # first-seen order
            if tile_id in self.completed_ids:
                raise RuntimeError(f"tile {tile_id} received rows after it was complete")
            part = batch.filter(pa.array(tile_ids == tile_id))
            self._parts[tile_id].append(part)
            self._counts[tile_id] += part.num_rows
            expected = part.column("tile_n_sources")[0].as_py()
            if self._counts[tile_id] > expected:
                raise RuntimeError(f"tile {tile_id}: {self._counts[tile_id]} rows, expected {expected}")
            if self._counts[tile_id] == expected:
                done.append(self._finish(tile_id))
        return done

    def _finish(self, tile_id: str) -> CompletedTile:
        self.completed_ids.add(tile_id)
        del self._counts[tile_id]
        rows = pa.concat_tables(self._parts.pop(tile_id))
        order = np.argsort(np.asarray(rows.column("source_id")), kind="stable")
        model_seconds = float(np.nansum(np.asarray(rows.column("model_seconds"), dtype=float)))
        table = rows.take(pa.array(order)).drop_columns(list(LEDGER_COLUMNS))
        return CompletedTile(tile_id, table, model_seconds)

    @property
    def incomplete(self) -> dict[str, int]:
        """Tiles that started but did not complete: tile id -> rows received."""
        return dict(self._counts)


@dataclass
class TileOutcome:
    """What the CPU stage reported for one tile."""

    status: str
    error: str
    seconds: float
    n_sources: int
    node_id: str  # Ray node that processed the tile


class TileStatusBoard:
    """Outcome of every tile of a run, reported by the CPU stage (run as a Ray actor)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, TileOutcome] = {}

    def report(self, tile_id: str, status: str, error: str, seconds: float, n_sources: int,
               node_id: str = "") -> None:
        # a retried task reports again; its latest outcome wins
        self.outcomes[tile_id] = TileOutcome(status, error, seconds, n_sources, node_id)

    def snapshot(self) -> dict[str, TileOutcome]:
        return dict(self.outcomes)
