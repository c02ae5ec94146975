"""Detection, catalog-driven sources, cutouts and bad data inside a tile."""

from __future__ import annotations

import os

import numpy as np
import pytest

from galscale.config import MORPHOLOGY_BANDS, NIRCAM_BANDS, DetectionConfig
from galscale.survey.completeness import completeness, truth_snr
from galscale.survey.cutouts import (
    CutoutConfig,
    frame_radius,
    make_cutouts,
    morphology_frame_side,
    morphology_resolved,
    morphology_stretch,
)
from galscale.survey.extract import extract_tile
from galscale.survey.flags import Flag
from galscale.survey.sources import detect_sources, project_positions, source_ids
from galscale.survey.store import SurveyBlock, open_survey
from galscale.survey.synthetic import gaussian_images, make_gaussian_survey, tan_header
from galscale.survey.tiling import make_tiles

DET = DetectionConfig()


@pytest.fixture(scope="module")
def detected(small_survey):
    s = small_survey.survey
    return detect_sources(s, s.read_block(s.bands, 0, s.shape[0], 0, s.shape[1]), config=DET)


def test_completeness_positions_and_fluxes(small_survey, detected):
    truth = small_survey.truth
    sn = truth_snr(truth, DET.bands, {b: 1.0 for b in DET.bands})
    res = completeness(detected, truth, sn, NIRCAM_BANDS, snr_min=10.0)
    assert res.n_truth >= 30
    assert res.completeness >= 0.95, res.summary()
    assert res.median_offset_px < 0.2
    assert res.flux_within_3sigma >= 0.9, res.summary()
    assert 0.97 < res.median_flux_ratio < 1.02
    # measured columns are consistent
    good = detected["snr"] > 20
    mags = detected["mag_F200W"][good]
    np.testing.assert_allclose(mags, 31.4 - 2.5 * np.log10(detected["flux_F200W"][good]))
    assert (detected["flux_radius"][good] > 0.5).all()
    assert np.isfinite(detected["ra"]).all() and detected["source_id"].dtype == np.int64


def test_source_ids_unique_per_pixel():
    px, py = np.array([3, 3, 4]), np.array([5, 5, 5])
    ids = source_ids(px, py, 100, np.array([2.0, 1.0, 0.0]))
    assert list(ids) == [(5 * 100 + 3) * 8 + 1, (5 * 100 + 3) * 8, (5 * 100 + 4) * 8]


def test_catalog_mode_and_off_survey(small_survey):
    s = small_survey.survey
    truth = small_survey.truth
    ra, dec = s.wcs.pixel_to_world_values(truth["x"][:10], truth["y"][:10])
    ra = np.r_[ra, ra[0] + 1.0, np.nan]  # one far off the survey, one not projectable
    dec = np.r_[dec, dec[0], np.nan]
    pos = project_positions({"RA": ra, "Dec": dec, "id": np.arange(12) + 100}, s)
    cols = extract_tile(s, make_tiles(s.shape, 1000, 128)[0], positions=pos)
    assert len(cols["source_id"]) == 12 and len(np.unique(cols["source_id"])) == 12
    by_input = {int(i): k for k, i in enumerate(cols["input_id"])}
    for j in range(10):
        k = by_input[100 + j]
        assert abs(cols["x"][k] - truth["x"][j]) < 1e-6
        assert cols["flags"][k] & int(Flag.OFF_SURVEY) == 0
        assert np.isfinite(cols["flux_F200W"][k])
    for j, text in ((110, "outside grid"), (111, "not projectable")):
        k = by_input[j]
        assert cols["flags"][k] & int(Flag.OFF_SURVEY) and text in cols["flag_reason"][k]
        assert np.isnan(cols["flux_F200W"][k])
    with pytest.raises(ValueError, match="'ra' and 'dec'"):
        project_positions({"x": [1.0]}, s)
    # every row says whether its morphology is measurable, by the documented rule
    scale = s.pixel_scale_arcsec
    rule = (cols["flux_radius"] * scale >= 0.2) & (cols["snr"] >= 20)
    np.testing.assert_array_equal(cols["morph_resolved"], rule)
    assert not cols["morph_resolved"][[by_input[110], by_input[111]]].any()


def test_morphology_resolved_rule():
    cfg = CutoutConfig()
    radius_px = np.array([10.0, 5.0, 10.0, np.nan, 6.7])
    snr = np.array([25.0, 25.0, 19.0, 50.0, 20.0])
    np.testing.assert_array_equal(morphology_resolved(radius_px, snr, 0.03, cfg),
                                  [True, False, False, False, True])
    strict = CutoutConfig(resolved_min_radius_arcsec=0.3, resolved_min_snr=10.0)
    np.testing.assert_array_equal(morphology_resolved(radius_px, snr, 0.03, strict),
                                  [True, False, True, False, False])


def test_cutouts_shapes_range_edge_and_mask():
    shape = (300, 300)
    sci, err, truth = gaussian_images(shape, 3, seed=5, bands=NIRCAM_BANDS)
    sci["F200W"][140:160, 140:160] = np.nan  # a hole (e.g. all-NaN region)
    err["F150W"][:, :5] = 0.0  # zero-weight column
    block = SurveyBlock(list(NIRCAM_BANDS), 0, 0, np.stack([sci[b] for b in NIRCAM_BANDS]),
                        np.stack([err[b] for b in NIRCAM_BANDS]))
    x, y = np.array([150.0, 10.2, 200.0]), np.array([150.0, 20.7, 100.0])
    c = make_cutouts(block, x, y, shape)
    assert c.multiband_flux.shape == (3, 7, 64, 64) and c.multiband_flux.dtype == np.float32
    assert c.morph.shape == (3, 3, 256, 256) and c.morph.dtype == np.float32
    assert 0.0 <= c.morph.min() and c.morph.max() <= 1.0 and np.isfinite(c.morph).all()
    assert np.isfinite(c.multiband_flux).all() and np.isfinite(c.multiband_err).all()
    # source 0 sits on the hole: masked, padded with zero flux and zero error
    i200 = NIRCAM_BANDS.index("F200W")
    assert c.multiband_err[0, i200, 32, 32] == 0 and c.multiband_flux[0, i200, 32, 32] == 0
    np.testing.assert_allclose(c.masked_fraction[0], 400 / (7 * 64 * 64))
    # source 1 near the corner: cutout crosses the survey edge
    assert c.edge[1] and c.masked_fraction[1] > 0.3 and not c.edge[0]
    # source 2: 64 px cutout clean, 256 px one crosses the edge
    assert c.masked_fraction[2] == 0 and c.edge[2] and c.morph_masked_fraction[2] > 0
    # the source pixel is at index size // 2
    px, py = 200, 100
    np.testing.assert_array_equal(c.multiband_flux[2, 0, 32, 32], sci["F090W"][py, px])


def test_morphology_stretch_properties():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (2, 3, 64, 64))
    img[:, :, 30:34, 30:34] += 500
    img[1, :, 0:3, 0:3] += 5000  # a brighter neighbour off-centre does not set the scale
    out = morphology_stretch(img)
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0, 0, 32, 32] > 0.9 and np.median(out) < 0.2
    np.testing.assert_allclose(out[1, :, 8:, 8:], out[0, :, 8:, 8:], atol=0.2)
    np.testing.assert_allclose(morphology_stretch(img * 7.0), out, atol=1e-6)  # scale-free
    assert CutoutConfig().morph_bands == MORPHOLOGY_BANDS


def _half_light_radius(image: np.ndarray) -> float:
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    r = np.hypot(yy - (image.shape[0] - 1) / 2, xx - (image.shape[1] - 1) / 2).ravel()
    order = np.argsort(r)
    cum = np.cumsum(image.ravel()[order])
    return float(r[order][np.searchsorted(cum, cum[-1] / 2)])


def test_morphology_cutouts_are_framed_by_the_galaxy_size():
    """A small galaxy fills the 256-px frame as a large one does: r50 -> 256 / 16 = 16 px."""
    size, sigma = 400, 2.5  # Gaussian r50 = 1.1774 sigma = 2.94 px
    yy, xx = np.mgrid[:size, :size]
    img = np.exp(-((xx - 200) ** 2 + (yy - 200) ** 2) / (2 * sigma**2)).astype(np.float32)
    block = SurveyBlock(list(MORPHOLOGY_BANDS), 0, 0, np.stack([img] * 3),
                        np.full((3, size, size), 1e-3, np.float32))
    cfg = CutoutConfig()
    r50 = frame_radius(block, np.array([200]), np.array([200]), cfg)[0]
    assert r50 == pytest.approx(1.1774 * sigma, rel=0.05)
    framed = make_cutouts(block, np.array([200.2]), np.array([199.7]), (size, size))
    native = make_cutouts(block, np.array([200.2]), np.array([199.7]), (size, size),
                          CutoutConfig(morph_side_per_radius=None))
    zoom = 256 / (16 * r50)  # output pixels per native pixel
    assert _half_light_radius(framed.morph[0, 0]) / _half_light_radius(
        native.morph[0, 0]) == pytest.approx(zoom, rel=0.15)
    w = framed.morph[0, 0] ** 4
    cy, cx = (np.mgrid[:256, :256] * w).sum(axis=(1, 2)) / w.sum()
    assert abs(cy - 127.5) < 0.2 and abs(cx - 127.5) < 0.2  # centred on the source pixel
    assert framed.morph_masked_fraction[0] == 0 and framed.morph.max() == 1.0
    side = morphology_frame_side(np.array([1.0, r50, 10.0, 40.0, np.nan]), cfg)
    np.testing.assert_allclose(side[:3], [32.0, 16 * r50, 160.0])
    assert np.isnan(side[3:]).all()  # large or unmeasured: 256 native pixels
    # the same source cut from a smaller block around it is framed identically
    part = SurveyBlock(block.bands, 72, 72, block.sci[:, 72:328, 72:328],
                       block.err[:, 72:328, 72:328])
    again = make_cutouts(part, np.array([200.2]), np.array([199.7]), (size, size))
    np.testing.assert_array_equal(again.morph, framed.morph)
    # a hole inside the framed square is padded and counted; one outside it is not
    holes = block.sci.copy()
    holes[1, 205:211, 212:218] = np.nan  # ~6 x 6 native px inside the ~47 px square
    holes[1, 200:206, 300:306] = np.nan  # 100 px out: inside the native cutout only
    holed = SurveyBlock(block.bands, 0, 0, holes, block.err)
    cut = make_cutouts(holed, np.array([200.2]), np.array([199.7]), (size, size))
    assert 0.0 < cut.morph_masked_fraction[0] < 0.05
    assert ((cut.morph[0, 1] == 0) & (cut.morph[0, 0] > 0)).any()  # padded with 0
    native_holed = make_cutouts(holed, np.array([200.2]), np.array([199.7]), (size, size),
                                CutoutConfig(morph_side_per_radius=None))
    assert native_holed.morph_masked_fraction[0] > 0
    outside = holes.copy()
    outside[1, 205:211, 212:218] = block.sci[1, 205:211, 212:218]
    cut = make_cutouts(SurveyBlock(block.bands, 0, 0, outside, block.err), np.array([200.2]),
                       np.array([199.7]), (size, size))
    assert cut.morph_masked_fraction[0] == 0
    np.testing.assert_array_equal(cut.morph, framed.morph)
    with pytest.raises(ValueError, match="morph_side_per_radius"):
        CutoutConfig(morph_side_per_radius=0)


def test_bad_data_inside_tiles_is_flagged_not_fatal(tmp_path):
    url = str(tmp_path / "bad.zarr")
    bands = ("F150W", "F200W", "F277W")  # other NIRCam bands missing from this survey
    truth = make_gaussian_survey(url, shape=(384, 384), n_sources=25, seed=9, chunk=128,
                                 bands=bands)
    os.remove(os.path.join(url, "sci", "F277W", "c", "1", "1"))  # missing chunk
    with open(os.path.join(url, "err", "F200W", "c", "2", "2"), "wb") as f:
        f.write(b"\0" * 17)  # corrupt chunk
    s = open_survey(url)
    tiles = make_tiles(s.shape, 384, 128)  # step 128: 3 x 3 tiles
    rows = []
    for t in tiles:
        cols = extract_tile(s, t, detection=DetectionConfig(threshold_sigma=3.0))
        rows.append(cols)
    flags = np.concatenate([r["flags"] for r in rows])
    reasons = np.concatenate([r["flag_reason"] for r in rows])
    assert len(flags) >= 12
    assert (flags & int(Flag.BAND_MISSING)).all()  # F090W, F115W, F356W, F444W absent
    assert all("F090W" in r for r in reasons)
    f090 = np.concatenate([r["flux_F090W"] for r in rows])
    assert np.isnan(f090).all()
    mb = np.concatenate([r["multiband_flux"] for r in rows])
    assert (mb[:, NIRCAM_BANDS.index("F090W")] == 0).all()
    missing = flags & int(Flag.MISSING_DATA) != 0
    assert missing.any()
    assert any("missing chunk sci/F277W/c/1/1" in r for r in reasons[missing])
    assert any("corrupt chunk err/F200W/c/2/2" in r for r in reasons[missing])
    # sources in the damaged chunk are still found from the remaining bands
    xs = np.concatenate([r["x"] for r in rows])
    ys = np.concatenate([r["y"] for r in rows])
    inside = (truth["x"] > 130) & (truth["x"] < 250) & (truth["y"] > 130) & (truth["y"] < 250)
    for tx, ty in zip(truth["x"][inside], truth["y"][inside], strict=True):
        if truth["flux_F150W"][np.flatnonzero(truth["x"] == tx)[0]] > 100:
            assert np.hypot(xs - tx, ys - ty).min() < 1.0


def test_all_nan_region_and_no_detection_band(tmp_path):
    shape = (256, 256)
    sci, err, truth = gaussian_images(shape, 8, seed=2, bands=("F200W",))
    sci["F200W"][:, 128:] = np.nan
    url = str(tmp_path / "nan.zarr")
    from galscale.survey.store import write_survey

    write_survey(url, sci, err, tan_header(shape), pixel_scale_arcsec=0.03, zeropoint_ab=31.4,
                 chunk=128)
    s = open_survey(url)
    tile = make_tiles(shape, 512, 128)[0]
    cols = extract_tile(s, tile, detection=DetectionConfig(bands=("F200W",), threshold_sigma=3))
    assert (cols["x"] < 128).all()  # nothing invented in the empty half
    pos = project_positions({"ra": s.wcs.pixel_to_world_values(200.0, 100.0)[0:1],
                             "dec": s.wcs.pixel_to_world_values(200.0, 100.0)[1:2]}, s)
    c2 = extract_tile(s, tile, positions=pos, detection=DetectionConfig(bands=("F200W",)))
    assert c2["flags"][0] & int(Flag.NO_DATA) and "no band has data" in c2["flag_reason"][0]
    assert np.isnan(c2["flux_F200W"][0]) and c2["masked_fraction"][0] > 0.4
    with pytest.raises(ValueError, match="none of the detection bands"):
        extract_tile(s, tile, detection=DetectionConfig(bands=("F444W",)))


# ---------------------------------------------------------------------------------------------
# deep-field behaviour: faint sources beside bright ones, truth light centroids and S/N


def _gauss(shape, x, y, sigma, flux):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2)
                                                  / sigma**2)


@pytest.fixture(scope="module")
def bright_and_faint(tmp_path_factory):
    """Pairs of a bright Gaussian and a 1/1000 as bright one 10.9-12.4 px away (their
    isophotes touch), white noise of 1."""
    from galscale.survey.store import write_survey

    shape = (160, 400)
    rng = np.random.default_rng(3)
    clean, faint = np.zeros(shape), []
    for k in range(4):
        bx, by = 50.0 + 95 * k + rng.uniform(-0.5, 0.5), 80.0 + rng.uniform(-0.5, 0.5)
        fx, fy = bx + 10.9 + k * 0.5, by + 0.4 * k
        clean += _gauss(shape, bx, by, 2.0, 300000.0) + _gauss(shape, fx, fy, 1.5, 300.0)
        faint.append((fx, fy))
    sci = {b: (clean + rng.standard_normal(shape)).astype(np.float32) for b in DET.bands}
    err = {b: np.ones(shape, np.float32) for b in DET.bands}
    url = str(tmp_path_factory.mktemp("pairs") / "pairs.zarr")
    write_survey(url, sci, err, tan_header(shape), pixel_scale_arcsec=0.03, zeropoint_ab=31.4,
                 chunk=128)
    s = open_survey(url)
    det = detect_sources(s, s.read_block(s.bands, 0, shape[0], 0, shape[1]), config=DET,
                         bands=DET.bands)
    return np.array(faint), det


def test_faint_neighbour_of_a_bright_source_is_deblended_and_centred(bright_and_faint):
    # S/N of each faint source ~ 300 / sqrt(4 pi 1.5^2) / sqrt(5 bands)^-1 ~ 100 in the stack;
    # with SExtractor-like defaults (deblend_cont 0.005) they merge into the bright one, and a
    # windowed centroid over all pixels is pulled towards the bright neighbour by pixels
    faint, det = bright_and_faint
    d = np.hypot(det["x"][:, None] - faint[:, 0], det["y"][:, None] - faint[:, 1])
    j = d.argmin(0)
    assert (d.min(0) < 0.5).all(), d.min(0)
    assert (det["flags"][j] & Flag.BLENDED).all()
    assert not (det["flags"][j] & Flag.TRUNCATED).any()  # neighbour pixels are not "no data"
    f, e = det["flux_F277W"][j], det["flux_err_F277W"][j]
    # pixels of the bright neighbour's segment are left out of the aperture; its wing under the
    # faint source's own segment (here ~100x the faint source's surface brightness) is not
    assert ((f > 0.8 * 300.0) & (f < 1.25 * 300.0)).all(), (f, e)


def test_detection_defaults_and_kernel():
    from galscale.survey.sources import gaussian_kernel

    assert gaussian_kernel(0.0) is None
    k = gaussian_kernel(3.3)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and k.shape[0] >= 7
    assert abs(k.sum() - 1.0) < 1e-12 and k.argmax() == k.size // 2
    assert DET.deblend_cont <= 1e-3 and DET.threshold_sigma >= 2.0


def test_light_truth_centroid_and_aperture_snr():
    from galscale.sim.survey import light_truth

    n, sigma = 64, 2.0
    one = _gauss((n, n), 31.3, 32.6, sigma, 1000.0)
    x, y, snr = light_truth(one, 31.3, 32.6, 1.0)
    assert abs(x - 31.3) < 1e-3 and abs(y - 32.6) < 1e-3
    # AUTO aperture of a Gaussian: 2.5 Kron radii = 2.5 sqrt(pi/2) sigma holds ~94% of the light
    r = 2.5 * np.sqrt(np.pi / 2) * sigma
    expect = 1000.0 * (1 - np.exp(-0.5 * (r / sigma) ** 2)) / np.sqrt(np.pi * r * r)
    assert abs(snr / expect - 1) < 0.05, (snr, expect)
    # two nuclei: the profile centre between them is not where the light is; with the merger
    # window the brighter nucleus is returned
    pair = _gauss((n, n), 24.0, 32.0, 2.0, 600.0) + _gauss((n, n), 40.0, 32.0, 2.0, 300.0)
    x, y, _ = light_truth(pair, 32.0, 32.0, 1.0, peak_window_px=2.0)
    assert abs(x - 24.0) < 0.2 and abs(y - 32.0) < 0.05
    assert light_truth(np.zeros((n, n)), 5.0, 6.0, 1.0) == (5.0, 6.0, 0.0)


def test_local_background_is_tiling_independent_and_removes_halos():
    from galscale.survey.sources import local_background

    shape = (300, 300)
    rng = np.random.default_rng(5)
    halo = _gauss(shape, 150.3, 140.7, 25.0, 4.0e5)  # an extended halo, peak ~100 sigma
    img = halo + _gauss(shape, 200.0, 120.0, 1.5, 300.0) + rng.standard_normal(shape)
    mask = np.zeros(shape, bool)
    whole = local_background(img, mask, 0, 0, 72)
    # a block starting elsewhere (not on a bin edge) gives the same map away from its edges
    y0, x0 = 37, 53
    part = local_background(img[y0:, x0:], mask[y0:, x0:], y0, x0, 72)
    inner = (slice(y0 + 80, 300 - 80), slice(x0 + 80, 300 - 80))
    np.testing.assert_allclose(part[80:-80, 80:-80], whole[inner], atol=1e-12)
    # it takes out most of the halo's light around the compact source on it (so that the
    # source's isophote no longer joins the halo's), not the source itself, nor the noise
    assert 0.5 * halo[120, 200] < whole[120, 200] < halo[120, 200]
    assert 0.4 * halo[140, 150] < whole[140, 150] < halo[140, 150]
    compact_peak = 300.0 / (2 * np.pi * 1.5**2)
    assert whole[120, 200] - halo[120, 200] < 0.1 * compact_peak
    assert abs(np.median(whole[:20, :20])) < 0.2
    # bins without data are filled, not NaN
    mask[:64, :64] = True
    assert np.isfinite(local_background(img, mask, 0, 0, 72)).all()


def test_segment_half_light_radius_ignores_neighbours():
    from galscale.survey.sources import segment_half_light_radius

    shape = (80, 80)
    img = _gauss(shape, 30.0, 40.0, 2.0, 1000.0) + _gauss(shape, 45.0, 40.0, 2.0, 1000.0)
    segmap = np.where(np.arange(80)[None, :] < 38, 1, 2).repeat(80, axis=0).astype(np.int32)
    r = segment_half_light_radius(img, np.array([30.0]), np.array([40.0]), segmap,
                                  np.array([1], np.int32), np.zeros(shape, bool))
    assert abs(r[0] - 1.1774 * 2.0) < 0.35, r  # a Gaussian's r50 = 1.18 sigma
    # over both segments the half-light circle would reach the neighbour
    both = segment_half_light_radius(img, np.array([30.0]), np.array([40.0]),
                                     np.ones(shape, np.int32), np.array([1], np.int32),
                                     np.zeros(shape, bool))
    assert both[0] > 2 * r[0]
