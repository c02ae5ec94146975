"""The simulator checked against its own truth: photometry, dropouts, point sources,
concentration, determinism, stamps, contaminants and the command line."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import sep

from galscale.config import (
    MORPHOLOGY_BANDS,
    NIRCAM_BANDS,
    PIVOT_UM,
    REDSHIFT_CLASSES,
    DetectionConfig,
    SimConfig,
)
from galscale.sim.contaminants import add_contaminants, add_noise
from galscale.sim.filters import load_throughputs
from galscale.sim.seds import LYA_A, colour_model
from galscale.sim.stamps import morphology_stamps, redshift_stamps
from galscale.sim.survey import simulate_survey, write_simulated_survey

TINY = SimConfig(size=1024, n_sources=120, seed=7, kind_fractions=(0.3, 0.4, 0.18, 0.12),
                 high_z_fraction=0.4, galaxy_mag_range=(20.0, 26.0))


@pytest.fixture(scope="module")
def sim():
    return simulate_survey(TINY)


@pytest.fixture(scope="module")
def truth(sim):
    return sim.truth.to_pandas()


def _isolated(truth, i, radius_arcsec):
    """No other source's light (4 r_half + 0.3") reaches within `radius` of source i."""
    px = TINY.pixel_scale_arcsec
    d = np.hypot(truth.x - truth.x[i], truth.y - truth.y[i]) * px
    reach = 4 * truth.half_light_radius_arcsec.fillna(0) + 0.3
    others = np.arange(len(truth)) != i
    return bool(np.all(d[others] > radius_arcsec + reach[others]))


def test_filters_are_the_real_nircam_curves():
    thr = load_throughputs()
    for b in NIRCAM_BANDS:
        assert abs(thr[b].pivot_a / 1e4 / PIVOT_UM[b] - 1) < 0.01, b


def test_sed_dropouts_have_no_flux_blueward_of_lyman_alpha():
    cm = colour_model()
    thr = load_throughputs()
    for z in (6.5, 7.5, 9.0, 11.0):
        for t in range(cm.galaxy.shape[0]):
            r = cm.galaxy_ratios(np.array([t]), np.array([0.0]), np.array([z]))[0]
            for j, b in enumerate(NIRCAM_BANDS):
                red_edge = thr[b].wave_a[-1]
                if red_edge < LYA_A * (1 + z):
                    assert r[j] < 0.02, (z, t, b, r[j])
            assert r[NIRCAM_BANDS.index("F444W")] > 0.3


def test_survey_layout_and_truth_columns(sim, truth):
    assert sim.bands == NIRCAM_BANDS
    for b in NIRCAM_BANDS:
        assert sim.science[b].shape == (1024, 1024) and sim.science[b].dtype == np.float32
        assert np.all(np.isfinite(sim.error[b])) and np.all(sim.error[b] > 0)
        assert f"flux_{b}" in truth and f"mag_{b}" in truth
    assert truth.source_id.dtype == np.int64 and truth.source_id.is_unique
    assert set(truth.kind) <= {"disk", "non_disk", "star", "brown_dwarf"}
    assert (truth.is_disk == (truth.kind == "disk")).all()
    assert truth.loc[truth.kind == "star", "z_class"].isna().all()
    assert (truth.loc[truth.kind == "brown_dwarf", "z_class"] == "brown_dwarf").all()
    gal = truth.kind.isin(["disk", "non_disk"])
    assert set(truth.loc[gal, "z_class"]) == {"low_z", "high_z"}
    hz = truth.z_class == "high_z"
    assert truth.redshift[hz].between(6, 12).all() and (truth.redshift[gal & ~hz] < 6).all()
    # background noise in empty pixels matches the error map
    b = "F200W"
    quiet = sim.error[b] < 1.01 * sim.error[b].min()
    pulls = sim.science[b][quiet] / sim.error[b][quiet]
    assert abs(np.std(pulls) - 1) < 0.05 and abs(np.mean(pulls)) < 0.05
    # WCS: the truth RA/Dec follow the TAN projection of the header
    from astropy.wcs import WCS

    w = WCS(sim.wcs_header)
    ra, dec = w.wcs_pix2world(truth.x, truth.y, 0)
    assert np.allclose(ra, truth.ra) and np.allclose(dec, truth.dec)
    assert abs(w.proj_plane_pixel_scales()[0].to_value("arcsec") - 0.03) < 1e-9


def _psf_encircled_energy(band, radius_pix):
    """Fraction of the band PSF's light within `radius_pix`, drawn by GalSim's own FFT path."""
    import galsim

    from galscale.sim.render import band_psf

    img = galsim.Convolve(band_psf(band), galsim.Pixel(TINY.pixel_scale_arcsec)).drawImage(
        nx=600, ny=600, scale=TINY.pixel_scale_arcsec, method="no_pixel").array
    yy, xx = np.mgrid[:600, :600]
    return float(img[np.hypot(xx - 299.5, yy - 299.5) <= radius_pix].sum() / img.sum())


def test_bright_isolated_fluxes_match_truth(sim, truth):
    checked, ratios = 0, []
    for i in range(len(truth)):
        point = truth.kind[i] in ("star", "brown_dwarf")
        r_ap = 1.0 if point else max(0.8, 6 * truth.half_light_radius_arcsec[i] + 0.3)
        if not _isolated(truth, i, r_ap):
            continue
        x, y = truth.x[i], truth.y[i]
        r_pix = r_ap / TINY.pixel_scale_arcsec
        if min(x, y) < r_pix or max(x, y) > TINY.size - 1 - r_pix:
            continue
        for b in NIRCAM_BANDS:
            f, ferr, _ = sep.sum_circle(sim.science[b], [x], [y], r_pix, err=sim.error[b])
            true = truth[f"flux_{b}"][i]
            if true < 50 * ferr[0]:
                continue
            # A point source loses the PSF's diffraction wings outside the aperture; an extended
            # galaxy keeps between that and all of its light (wings beyond its stamp fold back).
            ee = _psf_encircled_energy(b, r_pix)
            lo, hi = true * ee, true if not point else true * ee
            tol = 4 * ferr[0] + 0.01 * true
            assert lo - tol < f[0] < hi + tol, (i, truth.kind[i], b, f[0], lo, hi)
            if point:
                ratios.append(f[0] / (true * ee))
            checked += 1
    assert checked >= 8, checked
    assert len(ratios) >= 3 and abs(np.median(ratios) - 1) < 0.01, ratios


def test_blend_ratio_separates_isolated_from_blended_sources(sim, truth):
    """blend_ratio: other sources' light on a source's core over its own; recomputed here from
    the noiseless renderings of the source alone and of everything."""
    from galscale.sim.survey import BLEND_APERTURE_PX, aperture_sum, render_sources

    ratio = truth.blend_ratio.to_numpy()
    assert (ratio >= 0).all()
    isolated = np.array([_isolated(truth, i, 0.3) for i in range(len(truth))])
    # (faint sources far out in a bright galaxy's wings are not "isolated" for their core)
    assert isolated.sum() > 10 and np.median(ratio[isolated]) < 0.01
    assert np.median(ratio[~isolated]) > 3 * np.median(ratio[isolated])
    cols = {c: truth[c].to_numpy() for c in truth.columns}
    w = np.array([np.median(sim.error[b]) ** -2.0 if b in DetectionConfig().bands else 0.0
                  for b in sim.science])  # the detection stack's inverse-variance weights
    i = int(np.argmax(ratio))  # the most blended source: compare with a direct computation
    alone, _, _ = render_sources({c: v[[i]] for c, v in cols.items()}, truth.x.to_numpy()[[i]],
                                 truth.y.to_numpy()[[i]], tuple(sim.science), (1024, 1024),
                                 TINY.pixel_scale_arcsec)
    everything, _, _ = render_sources(cols, truth.x.to_numpy(), truth.y.to_numpy(),
                                      tuple(sim.science), (1024, 1024), TINY.pixel_scale_arcsec)
    core = [aperture_sum(np.tensordot(w, im, axes=1), truth.x_light[i], truth.y_light[i],
                         BLEND_APERTURE_PX) for im in (alone, everything)]
    expected = (core[1] - core[0]) / core[0]
    assert expected > 0.5 and ratio[i] == pytest.approx(expected, rel=0.1)


def test_dropouts_have_no_significant_flux_blueward_of_the_break(sim, truth):
    thr = load_throughputs()
    n = 0
    for i in np.flatnonzero((truth.z_class == "high_z").to_numpy()):
        x, y = truth.x[i], truth.y[i]
        f277, e277, _ = sep.sum_circle(sim.science["F277W"], [x], [y], 6.0, err=sim.error["F277W"])
        if f277[0] < 10 * e277[0] or not _isolated(truth, i, 0.3):
            continue
        for b in NIRCAM_BANDS:
            if thr[b].wave_a[-1] < LYA_A * (1 + truth.redshift[i]):
                f, e, _ = sep.sum_circle(sim.science[b], [x], [y], 6.0, err=sim.error[b])
                assert f[0] < 3.5 * e[0], (i, truth.redshift[i], b, f[0], e[0])
                n += 1
    assert n >= 3


def _radii(img, x, y, fracs):
    r, _ = sep.flux_radius(img, [x], [y], [40.0], fracs, subpix=5)
    return np.ravel(r)


def test_brown_dwarfs_are_point_like(sim, truth):
    img = sim.science["F444W"]
    rad = {"brown_dwarf": [], "star": [], "galaxy": []}
    for i in range(len(truth)):
        x, y = truth.x[i], truth.y[i]
        f, e, _ = sep.sum_circle(img, [x], [y], 6.0, err=sim.error["F444W"])
        if f[0] < 20 * e[0] or not _isolated(truth, i, 1.0) or min(x, y) < 45 or max(x, y) > 978:
            continue
        kind = truth.kind[i] if truth.kind[i] in ("star", "brown_dwarf") else "galaxy"
        if kind == "galaxy" and truth.half_light_radius_arcsec[i] < 0.12:
            continue
        rad[kind].append(_radii(img, x, y, [0.5])[0])
    assert len(rad["brown_dwarf"]) >= 1 and len(rad["star"]) >= 1 and len(rad["galaxy"]) >= 1, rad
    psf_r = np.median(rad["star"])
    assert np.all(np.abs(np.array(rad["brown_dwarf"]) - psf_r) < 0.3 * psf_r), rad
    assert np.min(rad["galaxy"]) > 1.3 * np.max(rad["brown_dwarf"]), rad


def test_disks_and_spheroids_differ_in_concentration(sim, truth):
    img = sim.science["F277W"]
    conc = {"disk": [], "spheroid": []}
    for i in range(len(truth)):
        mt = truth.morph_type[i]
        if mt not in conc or truth.half_light_radius_arcsec[i] < 0.08:
            continue
        x, y = truth.x[i], truth.y[i]
        f, e, _ = sep.sum_circle(img, [x], [y], 8.0, err=sim.error["F277W"])
        if f[0] < 25 * e[0] or not _isolated(truth, i, 0.8) or min(x, y) < 45 or max(x, y) > 978:
            continue
        r20, r80 = _radii(img, x, y, [0.2, 0.8])
        conc[mt].append(r80 / r20)
    assert len(conc["disk"]) >= 3 and len(conc["spheroid"]) >= 3, conc
    assert np.median(conc["spheroid"]) > np.median(conc["disk"]) + 0.5, conc


def _tree_digest(path):
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_output(tmp_path):
    cfg = SimConfig(size=256, n_sources=25, seed=11, chunk=128)
    a, b = simulate_survey(cfg), simulate_survey(cfg)
    for band in NIRCAM_BANDS:
        assert a.science[band].tobytes() == b.science[band].tobytes()
        assert a.error[band].tobytes() == b.error[band].tobytes()
    assert a.truth.schema.equals(b.truth.schema, check_metadata=True)
    assert a.truth.to_pandas().equals(b.truth.to_pandas())  # NaN-aware, value by value
    write_simulated_survey(a, str(tmp_path / "a"))
    write_simulated_survey(b, str(tmp_path / "b"))
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    c = simulate_survey(SimConfig(size=256, n_sources=25, seed=12, chunk=128))
    assert c.science["F200W"].tobytes() != a.science["F200W"].tobytes()


def test_written_survey_reads_back(tmp_path):
    from galscale.survey.store import open_survey

    cfg = SimConfig(size=256, n_sources=10, seed=3, chunk=128, bands=("F150W", "F277W"))
    sim = simulate_survey(cfg)
    paths = write_simulated_survey(sim, str(tmp_path))
    s = open_survey(paths["survey"])
    assert tuple(s.bands) == ("F150W", "F277W") and tuple(s.shape) == (256, 256)
    np.testing.assert_array_equal(np.asarray(s.array("F277W", "sci")[:]), sim.science["F277W"])
    t = pq.read_table(paths["truth"])
    assert t.num_rows == 10 and "flux_F277W" in t.column_names and "flux_F444W" not in t.column_names


@pytest.mark.parametrize("bad", [
    {"bands": ("F200W",)}, {"bands": ("F277W", "F999W")}, {"size": 10},
    {"kind_fractions": (1.0, -1.0, 0.0, 0.0)}, {"high_z_fraction": 2.0},
])
def test_bad_config_is_refused_with_a_reason(bad):
    cfg = SimConfig(**{**{"size": 256, "n_sources": 5}, **bad})
    with pytest.raises(ValueError):
        simulate_survey(cfg)


def test_morphology_stamps():
    imgs, labels, meta = morphology_stamps(4, seed=1, size=128)
    assert imgs.shape == (4, len(MORPHOLOGY_BANDS), 128, 128) and imgs.dtype == np.float32
    assert imgs.min() >= 0 and imgs.max() <= 1 and np.isclose(imgs.reshape(4, -1).max(1), 1).all()
    assert labels.dtype == np.int64 and set(labels) <= {0, 1}
    assert (labels == np.array(meta.column("is_disk").to_pylist())).all()
    again, _, _ = morphology_stamps(4, seed=1, size=128)
    assert again.tobytes() == imgs.tobytes()
    dirty, _, meta_d = morphology_stamps(4, seed=1, size=128, contaminate=True, noise=True)
    assert dirty.min() >= 0 and dirty.max() <= 1 and not np.allclose(dirty, imgs)
    assert all(meta_d.column("contaminated").to_pylist())


def test_redshift_stamps():
    flux, err, labels, meta = redshift_stamps(24, seed=2, class_fractions=(1, 1, 1), size=64)
    assert flux.shape == err.shape == (24, 7, 64, 64) and flux.dtype == np.float32
    assert (err > 0).all() and set(labels) == {0, 1, 2}
    zc = meta.column("z_class").to_pylist()
    assert [REDSHIFT_CLASSES[k] for k in labels] == zc
    r = meta.column("flux_radius_pix").to_numpy()
    bd = labels == 2
    gal_big = ~bd & (meta.column("half_light_radius_arcsec").to_numpy() > 0.2)
    assert r[bd].max() < 3.5 and (not gal_big.any() or r[gal_big].min() > r[bd].max())
    # the truth fluxes are what the stamps hold (sum over the stamp, within noise)
    j = NIRCAM_BANDS.index("F444W")
    tot = flux[:, j].sum(axis=(1, 2))
    sig = np.sqrt((err[:, j] ** 2).sum(axis=(1, 2)))
    true = meta.column("flux_F444W").to_numpy()
    small = meta.column("half_light_radius_arcsec").to_numpy() < 0.15
    assert np.all(np.abs(tot - true)[small] < 5 * sig[small] + 0.06 * true[small])


def test_contaminants_and_noise_work_on_any_image():
    rng = np.random.default_rng(0)
    for shape in [(3, 256, 256), (3, 424, 424), (1, 64, 96), (50, 70)]:
        clean = np.zeros(shape, dtype=np.float32)
        dirty = add_contaminants(clean, rng, n_range=(2, 2))
        assert dirty.shape == shape and dirty.dtype == np.float32
        assert dirty.max() > 0.1 and dirty.min() >= 0 and dirty.max() <= 1
        noisy = add_noise(dirty, rng)
        assert noisy.shape == shape and 0 <= noisy.min() and noisy.max() <= 1
        assert np.std(noisy - dirty) > 0.003
    assert np.all(clean == 0)  # inputs are not modified
    with pytest.raises(ValueError):
        add_contaminants(np.zeros((2, 3, 4, 5)), rng)
    with pytest.raises(ValueError):
        add_contaminants(np.zeros((3, 8, 8)), rng, n_range=(3, 1))


def test_noise_law_draws_sigma_in_its_range():
    """A uniform law draws as rng.uniform does (the first shipped models' 0.01-0.06); the
    log-uniform default spreads evenly over log sigma."""
    from galscale.config import DEFAULT_NOISE, NoiseLaw

    a, b = np.random.default_rng(3), np.random.default_rng(3)
    uniform = NoiseLaw(0.01, 0.06, log_uniform=False)
    assert [uniform.draw_sigma(a) for _ in range(5)] == list(b.uniform(0.01, 0.06, 5))
    law = DEFAULT_NOISE
    assert law == NoiseLaw(0.01, 0.24, log_uniform=True)
    rng = np.random.default_rng(0)
    s = np.array([law.draw_sigma(rng) for _ in range(4000)])
    assert s.min() >= 0.01 and s.max() <= 0.24
    # half of the draws below the geometric mean, not below the arithmetic one
    assert abs(np.mean(s < np.sqrt(0.01 * 0.24)) - 0.5) < 0.03
    assert np.mean(s < 0.125) > 0.7
    noisy = add_noise(np.full((1, 64, 64), 0.5, np.float32), np.random.default_rng(1),
                      law=NoiseLaw(0.2, 0.2), poisson_range=(0.0, 0.0),
                      correlated_probability=0.0)
    assert np.std(noisy) == pytest.approx(0.2, rel=0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        NoiseLaw(0.1, 0.05)


def test_cli_simulate_writes_and_reports(tmp_path, capsys):
    from galscale.cli import main

    out = tmp_path / "field"
    assert main(["simulate", "--out", str(out), "--size", "256", "--n-sources", "12",
                 "--seed", "5", "--chunk", "128"]) == 0
    text = capsys.readouterr().out
    assert "survey.zarr" in text and "12 sources" in text and "256 x 256" in text
    assert (out / "survey.zarr").is_dir() and (out / "truth.parquet").is_file()
    with pytest.raises(SystemExit, match="F999W"):
        main(["simulate", "--out", str(tmp_path / "bad"), "--size", "256", "--bands", "F277W,F999W"])


def test_field_picture(sim, tmp_path):
    from PIL import Image

    from galscale.sim.pictures import save_field_png

    path = save_field_png(sim.science, sim.error, str(tmp_path / "f.png"), crop=256)
    with Image.open(path) as im:
        assert im.size == (256, 256)
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.max() > 200 and np.median(rgb) < 40  # bright sources on a dark sky
