"""Tiles: units of work with an overlap margin, and exactly-once source ownership.

The survey is cut into a grid of *inner* (owned) rectangles of side `step = tile_size - 2 *
margin` that tessellate the pixel grid; each tile reads its inner rectangle grown by `margin`
on every side (clipped to the survey), its *outer* bounds. A source belongs to the one tile
whose inner rectangle contains its centroid pixel (round(x), round(y)), pixel centres being at
integer coordinates; centroids that fall off the grid are clipped onto it, so the survey edge is
owned by the edge tiles. The margin only supplies context (detection near the inner edge,
cutouts), so it must be at least half the largest cutout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from galscale.config import MORPH_CUTOUT, TilingConfig

MIN_MARGIN = MORPH_CUTOUT // 2


class TilingError(ValueError):
    """Impossible tiling parameters."""


@dataclass(frozen=True)
class Tile:
    """One unit of work. Bounds are half-open pixel ranges [y0, y1) x [x0, x1)."""

    tile_id: str
    row: int
    col: int
    y0: int  # outer bounds, margin included, clipped to the survey
    y1: int
    x0: int
    x1: int
    iy0: int  # inner (owned) bounds
    iy1: int
    ix0: int
    ix1: int

    @property
    def outer_shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def owns(self, x: np.ndarray | float, y: np.ndarray | float,
             shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask: which positions (survey pixel coordinates) this tile owns."""
        px, py = owner_pixel(x, y, shape)
        return (py >= self.iy0) & (py < self.iy1) & (px >= self.ix0) & (px < self.ix1)


def tile_id_for(row: int, col: int) -> str:
    """Deterministic tile id from the grid position."""
    return f"r{row:04d}c{col:04d}"


def _check(shape: tuple[int, int], tile_size: int, margin: int, min_margin: int) -> int:
    ny, nx = shape
    if ny <= 0 or nx <= 0:
        raise TilingError(f"survey shape must be positive, got {shape}")
    if margin < min_margin:
        raise TilingError(
            f"tile margin {margin} px is smaller than half the largest cutout ({min_margin} px = "
            f"MORPH_CUTOUT // 2): cutouts of sources near a tile edge would be truncated"
        )
    step = tile_size - 2 * margin
    if step <= 0:
        raise TilingError(
            f"tile_size {tile_size} must exceed twice the margin ({2 * margin}) so tiles own pixels"
        )
    return step


def make_tiles(shape: tuple[int, int], tile_size: int, margin: int, *,
               min_margin: int = MIN_MARGIN) -> list[Tile]:
    """All tiles of a survey of `shape` ([ny, nx]), row-major, with deterministic ids."""
    step = _check(shape, tile_size, margin, min_margin)
    ny, nx = shape
    tiles = []
    for r in range(math.ceil(ny / step)):
        for c in range(math.ceil(nx / step)):
            iy0, iy1 = r * step, min((r + 1) * step, ny)
            ix0, ix1 = c * step, min((c + 1) * step, nx)
            tiles.append(Tile(
                tile_id=tile_id_for(r, c), row=r, col=c,
                y0=max(0, iy0 - margin), y1=min(ny, iy1 + margin),
                x0=max(0, ix0 - margin), x1=min(nx, ix1 + margin),
                iy0=iy0, iy1=iy1, ix0=ix0, ix1=ix1,
            ))
    return tiles


def tiles_for(shape: tuple[int, int], config: TilingConfig | None = None) -> list[Tile]:
    """`make_tiles` with a `TilingConfig` (defaults when None)."""
    config = config or TilingConfig()
    return make_tiles(shape, config.tile_size, config.margin)


def owner_pixel(x: np.ndarray | float, y: np.ndarray | float,
                shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel (px, py) that decides ownership: nearest pixel centre, clipped to the grid.

    Non-finite positions raise: they cannot be owned.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("source positions must be finite to be owned by a tile")
    px = np.clip(np.floor(x + 0.5), 0, shape[1] - 1).astype(np.int64)
    py = np.clip(np.floor(y + 0.5), 0, shape[0] - 1).astype(np.int64)
    return px, py


def tile_owner(x: np.ndarray | float, y: np.ndarray | float, shape: tuple[int, int],
               tile_size: int, margin: int, *, min_margin: int = MIN_MARGIN) -> np.ndarray:
    """Tile id (str array) owning each position, computed without building the tiles."""
    step = _check(shape, tile_size, margin, min_margin)
    px, py = owner_pixel(x, y, shape)
    rows, cols = py // step, px // step
    pairs = zip(np.ravel(rows), np.ravel(cols), strict=True)
    return np.array([tile_id_for(int(r), int(c)) for r, c in pairs])


def owns(tile: Tile, x: np.ndarray | float, y: np.ndarray | float,
         shape: tuple[int, int]) -> np.ndarray:
    """Functional form of `Tile.owns`."""
    return tile.owns(x, y, shape)


__all__ = ["Tile", "TilingError", "MIN_MARGIN", "make_tiles", "tiles_for", "tile_owner",
           "owns", "owner_pixel", "tile_id_for"]
