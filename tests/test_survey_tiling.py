"""Tiling: every pixel position owned by exactly one tile; detection exactly once per tiling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galscale.config import DetectionConfig, TilingConfig
from galscale.survey.sources import detect_sources
from galscale.survey.store import SurveyBlock
from galscale.survey.tiling import (
    MIN_MARGIN,
    TilingError,
    make_tiles,
    tile_owner,
    tiles_for,
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(ny=st.integers(1, 700), nx=st.integers(1, 700), margin=st.integers(MIN_MARGIN, 200),
       step=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_every_position_owned_exactly_once(ny, nx, margin, step, seed):
    shape = (ny, nx)
    tiles = make_tiles(shape, step + 2 * margin, margin)
    assert len({t.tile_id for t in tiles}) == len(tiles)
    rng = np.random.default_rng(seed)
    # pixel centres, pixel edges (x.5), and positions off the grid (owned by edge tiles)
    x = np.concatenate([rng.uniform(-3, nx + 3, 500), np.arange(nx) + 0.5, [-0.5, nx - 0.5]])
    y = np.concatenate([rng.uniform(-3, ny + 3, 500), np.full(nx, ny / 2), [-0.5, ny - 0.5]])
    counts = np.zeros(len(x), int)
    owner = np.empty(len(x), object)
    for t in tiles:
        assert 0 <= t.y0 <= t.iy0 < t.iy1 <= t.y1 <= ny and 0 <= t.x0 <= t.ix0 < t.ix1 <= t.x1 <= nx
        assert t.iy0 - t.y0 == min(margin, t.iy0) and t.y1 - t.iy1 == min(margin, ny - t.iy1)
        m = t.owns(x, y, shape)
        counts += m
        owner[m] = t.tile_id
    assert (counts == 1).all()
    np.testing.assert_array_equal(tile_owner(x, y, shape, step + 2 * margin, margin), owner)
    # inner regions tessellate the grid
    assert sum((t.iy1 - t.iy0) * (t.ix1 - t.ix0) for t in tiles) == ny * nx


def test_margin_and_size_checked():
    with pytest.raises(TilingError, match="half the largest cutout"):
        make_tiles((1000, 1000), 512, MIN_MARGIN - 1)
    with pytest.raises(TilingError, match="exceed twice the margin"):
        make_tiles((1000, 1000), 2 * MIN_MARGIN, MIN_MARGIN)
    tiles = tiles_for((5000, 3000), TilingConfig())
    assert tiles[0].tile_id == "r0000c0000" and tiles[0].outer_shape == (1920, 1920)
    assert max(max(t.outer_shape) for t in tiles) == 2048 and len(tiles) == 3 * 2


def test_ids_deterministic():
    a = make_tiles((900, 800), 400, 130)
    b = make_tiles((900, 800), 400, 130)
    assert a == b and [t.tile_id for t in a][:3] == ["r0000c0000", "r0000c0001", "r0000c0002"]


DETECT = DetectionConfig(threshold_sigma=2.5, min_area=5)  # fewer noise peaks: keeps the test fast
_rng = np.random.default_rng(7)
RANDOM_TILINGS = [(int(_rng.integers(MIN_MARGIN, 160)), int(_rng.integers(150, 330)))
                  for _ in range(3)]


@pytest.fixture(scope="module")
def reference(small_survey):
    s = small_survey.survey
    block = s.read_block(s.bands, 0, s.shape[0], 0, s.shape[1])
    return block, detect_sources(s, block, config=DETECT)


@pytest.mark.parametrize(("margin", "step"), RANDOM_TILINGS)
def test_detection_exactly_once_across_tilings(small_survey, reference, margin, step):
    """Union of owned sources over a random tiling == whole-survey detection, exactly once."""
    s = small_survey.survey
    full, reference = reference
    ids, xs, ys = [], [], []
    for t in make_tiles(s.shape, step + 2 * margin, margin):
        # the tile's pixels, sliced from the whole survey read once (I/O is tested elsewhere)
        block = SurveyBlock(full.bands, t.y0, t.x0, full.sci[:, t.y0:t.y1, t.x0:t.x1],
                            full.err[:, t.y0:t.y1, t.x0:t.x1])
        cols = detect_sources(s, block, t, config=DETECT)
        assert (cols["tile_id"] == t.tile_id).all()
        ids.append(cols["source_id"])
        xs.append(cols["x"])
        ys.append(cols["y"])
    ids = np.concatenate(ids)
    assert len(ids) > 60
    assert len(ids) == len(np.unique(ids)), "a source was owned by two tiles"
    missing = set(reference["source_id"]) - set(ids)
    extra = set(ids) - set(reference["source_id"])
    assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])
    order, ref_order = np.argsort(ids), np.argsort(reference["source_id"])
    np.testing.assert_allclose(np.concatenate(xs)[order], reference["x"][ref_order], atol=1e-9)
    np.testing.assert_allclose(np.concatenate(ys)[order], reference["y"][ref_order], atol=1e-9)
