"""Survey format: write/open locally and on moto S3, lazy metadata, chunk errors, bad input."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from galscale.survey.store import (
    CorruptChunkError,
    MissingBandError,
    MissingChunkError,
    SurveyFormatError,
    open_survey,
    write_survey,
)
from galscale.survey.synthetic import make_gaussian_survey, tan_header


def _tiny(shape=(50, 40), bands=("F150W", "F090W")):
    rng = np.random.default_rng(3)
    sci = {b: rng.normal(size=shape).astype(np.float32) for b in bands}
    err = {b: np.full(shape, 0.5, np.float32) for b in bands}
    return sci, err


def test_local_round_trip_and_metadata(tmp_path):
    sci, err = _tiny()
    url = str(tmp_path / "s.zarr")
    write_survey(url, sci, err, tan_header((50, 40)), pixel_scale_arcsec=0.03,
                 zeropoint_ab={"F150W": 28.0, "F090W": 27.5}, chunk=16, name="tiny",
                 attrs={"truth": "truth.parquet"})
    s = open_survey(url)
    assert s.bands == ["F090W", "F150W"]  # blue to red
    assert s.shape == (50, 40) and s.name == "tiny" and s.attrs["truth"] == "truth.parquet"
    assert s.zeropoint_ab == {"F090W": 27.5, "F150W": 28.0}
    assert s.bunit == {"F090W": "nJy", "F150W": "nJy"}
    np.testing.assert_array_equal(s.read("F150W", 3, 40, 5, 39), sci["F150W"][3:40, 5:39])
    np.testing.assert_array_equal(s.read("F090W", 0, 50, 0, 40, kind="err"), err["F090W"])
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._root is None and len(pickle.dumps(s)) < 5000
    blk = s2.read_block(["F150W"], 10, 20, 0, 40)
    np.testing.assert_array_equal(blk.sci[0], sci["F150W"][10:20])
    assert blk.problems == []
    ra, dec = s.wcs.pixel_to_world_values(19.5, 24.5)
    assert abs(ra - 150.1) < 1e-9 and abs(dec - 2.2) < 1e-9


def test_bad_writes_raise_clearly(tmp_path):
    sci, err = _tiny()
    hdr = tan_header((50, 40))
    with pytest.raises(MissingBandError, match="differ"):
        write_survey(str(tmp_path / "a"), sci, {"F150W": err["F150W"]}, hdr,
                     pixel_scale_arcsec=0.03, zeropoint_ab=28.0)
    bad = dict(sci, F090W=np.zeros((50, 41), np.float32))
    with pytest.raises(SurveyFormatError, match="one pixel grid"):
        write_survey(str(tmp_path / "b"), bad, err, hdr, pixel_scale_arcsec=0.03,
                     zeropoint_ab=28.0)
    with pytest.raises(MissingBandError, match="F090W"):
        write_survey(str(tmp_path / "c"), sci, err, hdr, pixel_scale_arcsec=0.03,
                     zeropoint_ab={"F150W": 28.0})


def test_open_rejects_non_survey(tmp_path):
    with pytest.raises(SurveyFormatError):
        open_survey(str(tmp_path / "nothing"))
    import zarr

    zarr.open_group(str(tmp_path / "plain"), mode="w")
    with pytest.raises(SurveyFormatError, match="not a galscale survey"):
        open_survey(str(tmp_path / "plain"))


def test_missing_and_corrupt_chunks_are_never_fill(tmp_path):
    sci, err = _tiny()
    url = str(tmp_path / "s.zarr")
    write_survey(url, sci, err, tan_header((50, 40)), pixel_scale_arcsec=0.03,
                 zeropoint_ab=28.0, chunk=16)
    os.remove(os.path.join(url, "sci", "F150W", "c", "1", "1"))
    with open(os.path.join(url, "err", "F090W", "c", "0", "0"), "wb") as f:
        f.write(b"not zstd")
    s = open_survey(url)
    with pytest.raises(MissingChunkError, match="sci/F150W/c/1/1"):
        s.read("F150W", 0, 50, 0, 40)
    with pytest.raises(CorruptChunkError, match="err/F090W"):
        s.read("F090W", 0, 20, 0, 20, kind="err")
    # untouched regions still read
    np.testing.assert_array_equal(s.read("F150W", 0, 16, 0, 40), sci["F150W"][:16])
    blk = s.read_block(["F090W", "F150W"], 0, 50, 0, 40)
    assert "missing chunk sci/F150W/c/1/1" in blk.problems
    assert "corrupt chunk err/F090W/c/0/0" in blk.problems
    assert np.isnan(blk.sci[1, 16:32, 16:32]).all()
    assert np.isnan(blk.err[0, :16, :16]).all()
    np.testing.assert_array_equal(blk.sci[1, :16], sci["F150W"][:16])
    with pytest.raises(MissingChunkError):
        s.read_block(["F150W"], 0, 50, 0, 40, strict=True)
    with pytest.raises(MissingBandError, match="F444W"):
        s.read_block(["F444W"], 0, 10, 0, 10)


def test_all_nan_chunk_is_stored_not_missing(tmp_path):
    sci, err = _tiny()
    sci["F150W"][:16, :16] = np.nan
    url = str(tmp_path / "s.zarr")
    write_survey(url, sci, err, tan_header((50, 40)), pixel_scale_arcsec=0.03,
                 zeropoint_ab=28.0, chunk=16)
    assert os.path.exists(os.path.join(url, "sci", "F150W", "c", "0", "0"))
    blk = open_survey(url).read_block(["F150W"], 0, 16, 0, 16)
    assert blk.problems == [] and np.isnan(blk.sci).all()


def test_s3_identical_to_local_and_chunk_aligned(tmp_path, s3_server):
    shape = (512, 512)
    local = str(tmp_path / "s.zarr")
    truth = make_gaussian_survey(local, shape=shape, n_sources=10, seed=4, chunk=128,
                                 bands=("F150W", "F200W"))
    bucket = s3_server.new_bucket()
    remote = f"{bucket}/field/s.zarr"
    make_gaussian_survey(remote, shape=shape, n_sources=10, seed=4, chunk=128,
                         bands=("F150W", "F200W"), storage_options=s3_server.storage_options)
    assert len(truth["x"]) == 10
    s3_server.reset_log()
    rs = open_survey(remote, s3_server.storage_options)
    meta_bytes = s3_server.bytes_sent(f"/{bucket[5:]}/")
    assert rs.shape == shape and meta_bytes < 20_000  # metadata only
    ls = open_survey(local)
    full = ls.read_block(["F150W", "F200W"], 0, 512, 0, 512)
    total_pixels_bytes = full.sci.nbytes + full.err.nbytes
    s3_server.reset_log()
    rblk = pickle.loads(pickle.dumps(rs)).read_block(["F150W", "F200W"], 128, 256, 256, 384)
    fetched = s3_server.bytes_sent(f"/{bucket[5:]}/field/s.zarr/")
    lblk = ls.read_block(["F150W", "F200W"], 128, 256, 256, 384)
    np.testing.assert_array_equal(rblk.sci, lblk.sci)
    np.testing.assert_array_equal(rblk.err, lblk.err)
    # one chunk per array (4 arrays) out of 16: compressed bytes of a 1/16 region at most
    chunk_keys = [p for m, p, _ in s3_server.requests if m == "GET" and "/c/" in p]
    assert sorted({p.rsplit("/c/", 1)[1] for p in chunk_keys}) == ["1/2"]
    assert 0 < fetched < total_pixels_bytes / 8


def test_s3_missing_chunk_detected(tmp_path, s3_server):
    import s3fs

    bucket = s3_server.new_bucket()
    url = f"{bucket}/s.zarr"
    sci, err = _tiny()
    write_survey(url, sci, err, tan_header((50, 40)), pixel_scale_arcsec=0.03,
                 zeropoint_ab=28.0, chunk=16, storage_options=s3_server.storage_options)
    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    fs.rm(f"{url[5:]}/sci/F150W/c/0/1")
    s = open_survey(url, s3_server.storage_options)
    with pytest.raises(MissingChunkError, match="sci/F150W/c/0/1"):
        s.read("F150W", 0, 16, 0, 40)


def test_env_endpoint(monkeypatch, s3_server, tmp_path):
    """Credentials and endpoint from the standard AWS environment variables alone."""
    bucket = s3_server.new_bucket()
    sci, err = _tiny()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    write_survey(f"{bucket}/e.zarr", sci, err, tan_header((50, 40)), pixel_scale_arcsec=0.03,
                 zeropoint_ab=28.0, chunk=32)
    s = open_survey(f"{bucket}/e.zarr")
    np.testing.assert_array_equal(s.read("F090W", 0, 50, 0, 40), sci["F090W"])
    shutil.rmtree(tmp_path, ignore_errors=True)
