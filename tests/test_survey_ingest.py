"""FITS ingest: JWST i2d-like and plain files -> Zarr survey, pixels and WCS preserved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from galscale.cli import main
from galscale.survey.ingest import IngestError, ingest_fits
from galscale.survey.store import open_survey
from galscale.survey.synthetic import tan_header

SHAPE = (150, 130)
PIXAR_SR = (0.031 / 206264.806) ** 2


def _header(shape=SHAPE, **over):
    h = fits.Header()
    for k, v in tan_header(shape, ra=53.16, dec=-27.78, pixel_scale_arcsec=0.031).items():
        h[k] = v
    # a slightly rotated, non-trivial WCS
    th = np.deg2rad(17.0)
    d = 0.031 / 3600
    h["CD1_1"], h["CD1_2"] = -d * np.cos(th), d * np.sin(th)
    h["CD2_1"], h["CD2_2"] = d * np.sin(th), d * np.cos(th)
    for k, v in over.items():
        h[k] = v
    return h


def _i2d(path, band, rng, shape=SHAPE, header=None):
    sci = rng.normal(0.01, 0.002, shape).astype(np.float32)  # MJy/sr
    err = np.full(shape, 0.002, np.float32)
    wht = np.full(shape, 1e5, np.float32)
    wht[:10, :10] = 0  # no coverage
    prim = fits.PrimaryHDU()
    prim.header["FILTER"] = band
    h = header if header is not None else _header(shape)
    h["BUNIT"] = "MJy/sr"
    h["PIXAR_SR"] = PIXAR_SR
    hdul = fits.HDUList([prim, fits.ImageHDU(sci, h, name="SCI"),
                         fits.ImageHDU(err, name="ERR"), fits.ImageHDU(wht, name="WHT")])
    hdul.writeto(path)
    return sci, err


def test_i2d_round_trip_pixels_and_wcs(tmp_path):
    rng = np.random.default_rng(0)
    files, data = [], {}
    for band in ("F200W", "F150W"):
        p = str(tmp_path / f"mosaic_{band.lower()}_i2d.fits")
        data[band] = _i2d(p, band, rng)
        files.append(p)
    out = str(tmp_path / "ingested.zarr")
    ingest_fits(files, out, chunk=64, name="goods-s", block_cols=64)
    s = open_survey(out)
    assert s.bands == ["F150W", "F200W"] and s.shape == SHAPE and s.name == "goods-s"
    assert s.bunit == {"F150W": "nJy", "F200W": "nJy"}
    assert s.zeropoint_ab == {"F150W": 31.4, "F200W": 31.4}
    assert abs(s.pixel_scale_arcsec - 0.031) < 1e-9
    for band, (sci, err) in data.items():
        scale = 1e15 * PIXAR_SR
        got = s.read(band, 0, SHAPE[0], 0, SHAPE[1])
        np.testing.assert_allclose(got, sci * scale, rtol=1e-6)
        e = s.read(band, 0, SHAPE[0], 0, SHAPE[1], kind="err")
        assert np.isnan(e[:10, :10]).all()  # zero weight -> no error -> masked downstream
        np.testing.assert_allclose(e[10:, 10:], err[10:, 10:] * scale, rtol=1e-6)
    # WCS: world coordinates of pixel corners agree to < 1 mas
    w_in = WCS(_header())
    ys = np.array([-0.5, -0.5, SHAPE[0] - 0.5, SHAPE[0] - 0.5, 70.2])
    xs = np.array([-0.5, SHAPE[1] - 0.5, -0.5, SHAPE[1] - 0.5, 33.3])
    a = w_in.pixel_to_world(xs, ys)
    b = s.wcs.pixel_to_world(xs, ys)
    assert a.separation(b).to_value("mas").max() < 1.0


def test_plain_primary_and_band_from_filename(tmp_path, capsys):
    rng = np.random.default_rng(1)
    h = _header()
    h["BUNIT"] = "nJy"
    img = rng.normal(0, 3.0, SHAPE).astype(np.float32)
    p = str(tmp_path / "field_F444W_drz.fits")
    fits.PrimaryHDU(img, h).writeto(p)
    out = str(tmp_path / "plain.zarr")
    assert main(["ingest", p, "--out", out, "--chunk", "64"]) == 0
    s = open_survey(out)
    assert s.bands == ["F444W"]
    np.testing.assert_array_equal(s.read("F444W", 0, SHAPE[0], 0, SHAPE[1]), img)
    err = s.read("F444W", 0, 64, 0, SHAPE[1], kind="err")
    assert 2.7 < float(np.median(err)) < 3.3  # robust per-block estimate
    assert s.attrs["error_source"] == {"F444W": "robust MAD per block"}
    capsys.readouterr()
    assert main(["survey-info", out, "--tiles", "--tile-size", "300", "--margin", "128"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bands"] == ["F444W"] and info["shape"] == list(SHAPE)
    ids = [t["tile_id"] for t in info["tiles"]]  # step 300 - 2 * 128 = 44: 4 x 3 tiles
    assert len(ids) == 12 and ids[:4] == ["r0000c0000", "r0000c0001", "r0000c0002", "r0001c0000"]


def test_mismatched_grids_and_bad_inputs_name_the_file(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a = str(tmp_path / "a_F150W_i2d.fits")
    _i2d(a, "F150W", rng)
    b = str(tmp_path / "b_F200W_i2d.fits")
    _i2d(b, "F200W", rng, shape=(150, 131), header=_header((150, 131)))
    with pytest.raises(IngestError, match="b_F200W_i2d.fits: pixel grid"):
        ingest_fits([a, b], str(tmp_path / "x.zarr"))
    c = str(tmp_path / "c_F277W_i2d.fits")
    _i2d(c, "F277W", rng, header=_header(CRVAL1=53.17))
    with pytest.raises(IngestError, match="c_F277W_i2d.fits: WCS differs .* CRVAL"):
        ingest_fits([a, c], str(tmp_path / "x.zarr"))
    d = str(tmp_path / "d_F150W_i2d.fits")
    _i2d(d, "F150W", rng)
    with pytest.raises(IngestError, match="band F150W already given"):
        ingest_fits([a, d], str(tmp_path / "x.zarr"))
    e = str(tmp_path / "noband.fits")
    fits.PrimaryHDU(np.zeros(SHAPE, np.float32), _header()).writeto(e)
    with pytest.raises(IngestError, match="noband.fits: no FILTER keyword"):
        ingest_fits([e], str(tmp_path / "x.zarr"))
    assert main(["ingest", a, b, "--out", str(tmp_path / "y.zarr")]) == 2
    assert "b_F200W_i2d.fits" in capsys.readouterr().err
    with pytest.raises(IngestError, match="no such file"):
        ingest_fits([str(tmp_path / "missing.fits")], str(tmp_path / "x.zarr"))
