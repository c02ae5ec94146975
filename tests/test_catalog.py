"""Catalog schema, per-tile writing with manifests and provenance, gathering; local vs moto S3."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from galscale import catalog
from galscale.config import DetectionConfig
from galscale.survey.extract import extract_tile
from galscale.survey.store import open_survey
from galscale.survey.synthetic import make_gaussian_survey
from galscale.survey.tiling import make_tiles

BANDS = ("F150W", "F200W", "F277W")
DET = DetectionConfig(bands=BANDS, threshold_sigma=3.0, min_area=5)


def _run(survey_url, out, run_id, options=None):
    """Extract + write every tile; returns ({tile_id: cutout arrays}, tiles)."""
    s = open_survey(survey_url, options)
    cut = {}
    tiles = make_tiles(s.shape, 420, 128)  # step 164: 2 x 2 tiles
    for t in tiles:
        cols = extract_tile(s, t, detection=DET)
        cut[t.tile_id] = (cols["multiband_flux"], cols["multiband_err"], cols["morph_cutout"])
        prov = catalog.provenance_record(survey=survey_url, run_id=run_id,
                                         config_json='{"k": 1}', model_hashes={"m": "abc"})
        catalog.write_tile_catalog(catalog.to_table(cols), out, run_id, t.tile_id, prov,
                                   storage_options=options)
    return cut, tiles


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cat")
    url = str(root / "s.zarr")
    truth = make_gaussian_survey(url, shape=(320, 300), n_sources=20, seed=11, chunk=128,
                                 bands=BANDS)
    out = str(root / "out")
    cut, tiles = _run(url, out, "r1")
    return url, out, cut, tiles, truth


def test_schema_and_to_table():
    schema = catalog.catalog_schema(extra=[pa.field("p_disk", pa.float32())])
    assert schema.names[:6] == ["source_id", "tile_id", "ra", "dec", "x", "y"]
    assert {"flux_F090W", "flux_err_F444W", "mag_F200W", "flags", "flag_reason",
            "masked_fraction", "p_disk"} <= set(schema.names)
    assert schema.field("flags").type == pa.int64()
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    with pytest.raises(KeyError, match="catalog columns missing"):
        catalog.to_table({"source_id": np.array([1])})


def test_tile_files_manifests_provenance(local_run):
    url, out, cut, tiles, truth = local_run
    assert catalog.finished_tiles(out, "r1") == {t.tile_id for t in tiles}
    assert catalog.finished_tiles(out, "other") == set()
    files = sorted(os.listdir(os.path.join(out, "r1", "tiles")))
    assert files == sorted(f"{t.tile_id}.parquet" for t in tiles)  # no temp files left
    prov = catalog.read_provenance(catalog.tile_file(out, "r1", tiles[0].tile_id))
    assert prov["survey"] == url and prov["run_id"] == "r1" and prov["tile_id"] == "r0000c0000"
    assert prov["config"] == '{"k": 1}' and prov["model_hashes"] == {"m": "abc"}
    assert prov["galscale_version"]
    catalog.record_failed_tile(out, "r1", "r0009c0009", "boom: missing chunk")
    assert catalog.failed_tiles(out, "r1") == {"r0009c0009": "boom: missing chunk"}
    assert "r0009c0009" not in catalog.finished_tiles(out, "r1")
    os.remove(catalog.manifest_file(out, "r1", "r0009c0009"))


def test_gather_readable_everywhere(local_run):
    url, out, cut, tiles, truth = local_run
    table = catalog.gather_catalog(out, "r1")
    assert table.num_rows >= 15 and table.num_rows == sum(len(c[0]) for c in cut.values())
    ids = table.column("source_id").to_numpy()
    assert len(np.unique(ids)) == len(ids)
    extra = {"p_disk", "multiband_flux"} & set(table.column_names)
    assert extra == set()  # cutouts are dropped from the catalog
    prov = json.loads(table.schema.metadata[catalog.PROVENANCE_KEY])
    assert prov["tiles"] == sorted(t.tile_id for t in tiles)
    path = catalog.write_survey_catalog(out, "r1")
    import pandas as pd
    from astropy.table import Table

    df = pd.read_parquet(path)
    at = Table.read(path)
    assert len(df) == len(at) == table.num_rows
    np.testing.assert_array_equal(df["source_id"].to_numpy(), ids)
    np.testing.assert_array_equal(np.asarray(at["flux_F200W"]),
                                  table.column("flux_F200W").to_numpy())


def test_gather_detects_damage(local_run, tmp_path):
    url, out, cut, tiles, truth = local_run
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    f = catalog.tile_file(copy, "r1", tiles[1].tile_id)
    with open(f, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match=f"tile {tiles[1].tile_id}.*sha256"):
        catalog.gather_catalog(copy, "r1")
    # the same source written by two tiles is refused
    shutil.rmtree(copy)
    shutil.copytree(out, copy)
    t0 = catalog.gather_catalog(out, "r1").slice(0, 2).replace_schema_metadata(None)
    catalog.write_tile_catalog(t0, copy, "r1", "r0099c0099", {})
    with pytest.raises(ValueError, match="duplicate source_id"):
        catalog.gather_catalog(copy, "r1")


def test_local_and_s3_give_identical_cutouts_and_catalogs(local_run, s3_server):
    url, out, cut, tiles, truth = local_run
    opts = s3_server.storage_options
    bucket = s3_server.new_bucket()
    s3_survey = f"{bucket}/s.zarr"
    make_gaussian_survey(s3_survey, shape=(320, 300), n_sources=20, seed=11, chunk=128,
                         bands=BANDS, storage_options=opts)
    s3_out = f"{bucket}/out"
    s3_cut, _ = _run(s3_survey, s3_out, "r1", opts)
    assert s3_cut.keys() == cut.keys()
    for k in cut:
        for a, b in zip(cut[k], s3_cut[k], strict=True):
            np.testing.assert_array_equal(a, b)
    assert catalog.finished_tiles(s3_out, "r1", opts) == {t.tile_id for t in tiles}
    local = catalog.gather_catalog(out, "r1")
    remote = catalog.gather_catalog(s3_out, "r1", opts)
    assert local.schema.remove_metadata() == remote.schema.remove_metadata()
    assert local.num_rows == remote.num_rows > 10
    for name in local.column_names:
        a, b = local.column(name).to_numpy(), remote.column(name).to_numpy()
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)  # NaN-aware, bit-for-bit values
        else:
            assert list(a) == list(b), name
    prov = catalog.read_provenance(catalog.tile_file(s3_out, "r1", "r0000c0000"), opts)
    assert prov["survey"] == s3_survey
    path = catalog.write_survey_catalog(s3_out, "r1", opts)
    assert path == f"{s3_out}/r1/catalog.parquet"
