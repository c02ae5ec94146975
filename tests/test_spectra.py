"""Spectral embedding: reading, preprocessing, simulator, VAE, UMAP transform, mixtures,
persistence and the shipped model (no Ray here; see test_spectra_ray.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from galscale.models.spectral_vae import SpectralVAE, masked_mse_per_spectrum, vae_loss
from galscale.sim.spectra import POPULATIONS, redshift_quantiles, simulate_spectra
from galscale.spectra import preprocess as pp
from galscale.spectra.embedding import (
    FittedUmap,
    choose_umap_backend,
    gpu_umap_available,
    make_umap,
)
from galscale.spectra.io import (
    SpectraBatch,
    batch_from_columns,
    read_msaexp_fits,
    read_spectra_parquet,
    simulated_batch,
    write_spectra_parquet,
)
from galscale.spectra.mixtures import GaussianMixtureArrays, select_mixture

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CEERS = SHARED / "nirspec_prism" / "ceers_1345_933_prism.spec.fits"
SHIPPED = Path(__file__).resolve().parents[1] / "galscale" / "weights" / "spectral"


# ---------------------------------------------------------------- preprocessing


def test_default_rest_grid_is_the_papers():
    grid = pp.rest_grid()
    assert grid.size == 2459
    assert np.allclose(np.diff(grid), 3.0)
    assert grid[0] == pytest.approx(1075.524, abs=1e-3) and grid[-1] == pytest.approx(8449.524, abs=1e-3)
    shared = SHARED / "dja_z4" / "rest_wavelength_grid_z4_16.npy"
    if not shared.exists():
        pytest.skip("../shared/data absent: only the generated grid was checked")
    np.testing.assert_allclose(grid, np.load(shared), rtol=0, atol=1e-8)


def test_flat_spectrum_normalises_to_arcsinh_one_and_masks_uncovered_range():
    wave = np.linspace(0.6, 5.3, 500)
    z = 6.0  # rest coverage 857-7571 A: the red end of the grid is not covered
    pre = pp.preprocess_spectra([wave], [np.full(500, 2.0)], [np.full(500, 0.1)], [z])
    grid = pre.grid
    covered = grid <= 5.3e4 / (1 + z)
    assert pre.flags[0] == 0 and pre.norm[0] == pytest.approx(2.0)
    np.testing.assert_array_equal(pre.mask[0], covered)
    np.testing.assert_allclose(pre.x[0, covered], np.arcsinh(1.0), rtol=1e-6)
    assert np.all(pre.x[0, ~covered] == 0)


def test_resampling_is_exact_for_linear_flux_and_matches_per_row():
    rng = np.random.default_rng(3)
    waves, fluxes, zs = [], [], []
    for n in (300, 451, 120):  # ragged rows
        w = np.sort(rng.uniform(0.6, 5.3, n))
        waves.append(w)
        fluxes.append(1.0 + 0.3 * w)  # linear in wavelength: interpolation is exact
        zs.append(rng.uniform(4, 8))
    flux, valid, bad = pp.resample_to_rest(waves, fluxes, None, np.array(zs), pp.rest_grid())
    assert not bad.any()
    for i in range(3):
        rest_um = pp.rest_grid() * (1 + zs[i]) / 1e4
        np.testing.assert_allclose(flux[i, valid[i]], 1.0 + 0.3 * rest_um[valid[i]], rtol=1e-9)
        alone = pp.preprocess_spectra([waves[i]], [fluxes[i]], None, [zs[i]])
        batch = pp.preprocess_spectra(waves, fluxes, None, zs)
        np.testing.assert_array_equal(batch.x[i], alone.x[0])
        np.testing.assert_array_equal(batch.mask[i], alone.mask[0])


def test_bad_spectra_are_flagged_with_reasons_never_dropped():
    w = np.linspace(0.6, 5.3, 400)
    f, e = np.ones(400), np.full(400, 0.1)
    cases = [
        (w, f, e, np.nan, pp.FLAG_BAD_REDSHIFT),
        (w, f, e, -0.5, pp.FLAG_BAD_REDSHIFT),
        (w, f * np.nan, e, 5.0, pp.FLAG_NONFINITE),
        (np.linspace(2.0, 5.3, 400), f, e, 5.0, pp.FLAG_NO_FLUX_AT_NORM),  # 1500 A not covered
        (w, -f, e, 5.0, pp.FLAG_NONPOSITIVE_NORM),
        (w[::-1], f, e, 5.0, pp.FLAG_BAD_WAVELENGTH),
        (np.linspace(0.6, 0.7, 400), f, e, 14.0, pp.FLAG_ALL_MASKED),  # rest 400-466 A
        (w, f, np.zeros(400), 5.0, pp.FLAG_ALL_MASKED),  # err 0 everywhere: nothing measured
        (w, f, e, 5.0, 0),
    ]
    pre = pp.preprocess_spectra([c[0] for c in cases], [c[1] for c in cases],
                                [c[2] for c in cases], [c[3] for c in cases])
    assert pre.x.shape[0] == len(cases)
    for i, case in enumerate(cases):
        assert pre.flags[i] == case[4], (i, pre.flag_reason[i])
        assert (pre.flag_reason[i] == "") == (case[4] == 0)
        assert pre.mask[i].any() == (case[4] == 0)
    assert pre.flag_reason[3] == "no_valid_flux_near_norm_wavelength"


def test_norm_fallback_is_a_soft_flag():
    w = np.linspace(2.0, 5.3, 400)
    pre = pp.preprocess_spectra([w], [np.full(400, 3.0)], [np.full(400, 0.1)], [5.0],
                                pp.PreprocessConfig(norm_fallback=True))
    assert pre.flags[0] == pp.FLAG_NORM_FALLBACK and pre.mask[0].any()
    assert pre.norm[0] == pytest.approx(3.0)


# ---------------------------------------------------------------- simulator


@pytest.fixture(scope="module")
def sim():
    return simulate_spectra(1200, seed=11)


def test_simulator_is_deterministic_and_labelled(sim):
    again = simulate_spectra(1200, seed=11)
    np.testing.assert_array_equal(sim.flux, again.flux)
    assert not np.array_equal(sim.flux, simulate_spectra(1200, seed=12).flux)
    assert set(np.unique(sim.population)) == set(POPULATIONS)
    q = redshift_quantiles()
    assert sim.z.min() >= q[0] and sim.z.max() <= q[-1]
    assert 0.55 <= sim.wave_um[0] <= 0.65 and 5.2 <= sim.wave_um[-1] <= 5.35
    shared = SHARED / "dja_z4" / "redshift_z4_16.npy"
    if shared.exists():
        np.testing.assert_allclose(q, np.quantile(np.load(shared), np.linspace(0, 1, q.size)))


def test_simulated_populations_have_their_physical_signatures(sim):
    pre = pp.preprocess_spectra(sim.wave_um, sim.flux, sim.err, sim.z)
    grid = pre.grid

    def median_in(pop: str, lo: float, hi: float) -> float:
        rows = (sim.population == pop) & (pre.flags == 0)
        sel = (grid >= lo) & (grid <= hi)
        vals = np.where(pre.mask[rows][:, sel], pre.x[rows][:, sel], np.nan)
        return float(np.nanmedian(np.nanmax(vals, axis=1) if hi - lo < 100 else vals))

    assert median_in("lae", 1200, 1235) > median_in("lae", 1300, 1450) + 0.8  # Ly-alpha line
    assert median_in("eelg", 4990, 5030) > 2.5  # extreme [OIII]
    assert median_in("quenched", 4200, 4800) > median_in("quenched", 3000, 3500) + 0.3  # break
    assert median_in("lrd", 6000, 6400) > median_in("lrd", 3000, 3500) + 0.5  # red optical
    assert median_in("highz_metal_poor", 2500, 3000) < median_in("highz_metal_poor", 1300, 1450)


# ---------------------------------------------------------------- reading and writing


def test_parquet_roundtrip_and_catalog_redshifts(sim, tmp_path):
    batch = simulated_batch(sim).take(np.arange(20))
    path = write_spectra_parquet(batch, tmp_path / "s.parquet")
    back = read_spectra_parquet(path)
    np.testing.assert_array_equal(back.ids, batch.ids)
    np.testing.assert_allclose(back.flux[7], batch.flux[7])
    import pyarrow as pa

    pq.write_table(pa.table({"id": batch.ids[:10], "zcat": batch.z[:10] + 1}), tmp_path / "c.parquet")
    joined = read_spectra_parquet(path, catalog=tmp_path / "c.parquet", z_column="zcat")
    np.testing.assert_allclose(joined.z[:10], batch.z[:10] + 1)
    assert np.isnan(joined.z[10:]).all()  # ids missing from the catalog: NaN, flagged later
    with pytest.raises(ValueError, match="lacks columns"):
        batch_from_columns({"id": np.arange(3)})


def test_msaexp_fits_reader_takes_redshift_from_header(tmp_path):
    from astropy.io import fits

    wave = np.linspace(0.6, 5.3, 50)
    cols = fits.ColDefs([
        fits.Column(name="wave", format="D", unit="um", array=wave),
        fits.Column(name="flux", format="D", unit="uJy", array=np.ones(50)),
        fits.Column(name="err", format="D", unit="uJy", array=np.full(50, 0.1)),
    ])
    hdu = fits.BinTableHDU.from_columns(cols, name="SPEC1D")
    hdu.header["REDSHIFT"] = 5.5
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "a.spec.fits")
    spec = read_msaexp_fits(tmp_path / "a.spec.fits")
    assert spec.z[0] == 5.5 and len(spec.flux[0]) == 50
    assert read_msaexp_fits(tmp_path / "a.spec.fits", z=4.0).z[0] == 4.0
    fits.HDUList([fits.PrimaryHDU()]).writeto(tmp_path / "b.fits")
    with pytest.raises(ValueError, match="no SPEC1D"):
        read_msaexp_fits(tmp_path / "b.fits")


# ---------------------------------------------------------------- VAE


def test_recon_error_threshold_is_robust_to_a_minority_of_outliers():
    from galscale.spectra.fit import recon_error_threshold

    rng = np.random.default_rng(0)
    good = 10 ** rng.normal(-1.5, 0.2, 850)
    bad = 10 ** rng.normal(0.3, 0.3, 150)
    thr = recon_error_threshold(np.concatenate([good, bad, [np.nan]]), 3.0)
    assert (good > thr).mean() < 0.01 and (bad > thr).mean() > 0.95
    assert recon_error_threshold(good, 0.0) == np.inf


def test_vae_architecture_and_masked_loss():
    model = SpectralVAE(2459)
    widths = [blk[0].out_features for blk in model.encoder]
    assert widths == [512, 256, 128, 64] and model.to_mu.out_features == 16
    drops = [blk[3].p for blk in model.encoder]
    assert drops[0] == pytest.approx(0.2) and drops[-1] == pytest.approx(0.1)
    assert [blk[3].p for blk in model.decoder[:-1]] == drops[::-1]
    assert all(isinstance(blk[1], torch.nn.BatchNorm1d) for blk in model.encoder)
    model.eval()
    x = torch.randn(4, 2459)
    mask = torch.rand(4, 2459) > 0.3
    recon, mu, logvar = model(x)
    loss, metrics = vae_loss(x, mask, recon, mu, logvar)
    x2 = torch.where(mask, x, x + 100.0)  # change only masked values: loss must not move
    loss2, _ = vae_loss(x2, mask, recon, mu, logvar)
    assert loss.item() == pytest.approx(loss2.item())
    per = masked_mse_per_spectrum(x, recon, mask)
    assert metrics["recon_mse"] == pytest.approx(
        float(((recon - x) ** 2 * mask).sum().detach() / mask.sum()), rel=1e-5)
    assert per.shape == (4,)


# ---------------------------------------------------------------- UMAP and mixtures


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 8, size=(4, 16))
    labels = np.repeat(np.arange(4), 80)
    return (centres[labels] + rng.normal(0, 0.5, size=(320, 16))).astype(np.float32), labels


@pytest.fixture(scope="module")
def fitted_umap(blobs):
    return make_umap(n_neighbors=10, min_dist=0.0, backend="umap-learn").fit(blobs[0])


def test_umap_backend_choice():
    assert choose_umap_backend("umap-learn") == "umap-learn"
    with pytest.raises(ValueError, match="unknown UMAP backend"):
        choose_umap_backend("tsne")
    if not gpu_umap_available():
        assert choose_umap_backend("auto") == "umap-learn"
        with pytest.raises(RuntimeError, match="cuML"):
            choose_umap_backend("cuml")


def test_persisted_umap_transform_is_batch_independent_and_pickle_free(fitted_umap, blobs, tmp_path):
    x, labels = blobs
    new = x + np.random.default_rng(1).normal(0, 0.1, size=x.shape).astype(np.float32)
    xy = fitted_umap.transform(new)
    one_by_one = np.concatenate([fitted_umap.transform(new[i : i + 1]) for i in range(0, 320, 40)])
    # each new point lands among the fitted points of its own blob
    for k in range(4):
        centre = fitted_umap.embedding[labels == k].mean(axis=0)
        others = [fitted_umap.embedding[labels == j].mean(axis=0) for j in range(4) if j != k]
        d_own = np.linalg.norm(xy[labels == k] - centre, axis=1)
        d_other = np.min([np.linalg.norm(xy[labels == k] - o, axis=1) for o in others], axis=0)
        assert np.all(d_own < d_other)
    np.testing.assert_allclose(one_by_one, xy[::40], rtol=0, atol=1e-6)  # batch-independent
    path = fitted_umap.save(tmp_path / "u.npz")
    with np.load(path, allow_pickle=False) as f:  # would raise if anything needed unpickling
        assert set(f.files) == {"train_data", "embedding", "scalars", "backend"}
    np.testing.assert_array_equal(FittedUmap.load(path).transform(new), xy)
    nan_row = fitted_umap.transform(np.full((1, 16), np.nan, np.float32))
    assert np.isnan(nan_row).all()
    # a point the map was fitted on keeps its fitted position (re-assignment is a no-op)
    np.testing.assert_array_equal(fitted_umap.transform(x[::7]), fitted_umap.embedding[::7])


def test_mixture_selection_finds_the_blobs_and_predicts_from_arrays(fitted_umap, blobs, tmp_path):
    from sklearn.metrics import adjusted_rand_score

    sel = select_mixture(fitted_umap.embedding, k_range=(2, 6), n_restarts=2, seed=0)
    assert sel.k == 4 and sel.silhouette > 0.5
    cluster, prob = sel.mixture.predict(fitted_umap.embedding)
    assert adjusted_rand_score(blobs[1], cluster) == pytest.approx(1.0)
    assert np.all((prob > 0) & (prob <= 1))
    back = GaussianMixtureArrays.load(sel.mixture.save(tmp_path / "g.npz"))
    np.testing.assert_array_equal(back.predict(fitted_umap.embedding)[0], cluster)
    c, p = back.predict(np.array([[np.nan, 0.0]]))
    assert c[0] == -1 and np.isnan(p[0])
    with pytest.raises(ValueError, match="k_range"):
        select_mixture(fitted_umap.embedding, k_range=(1, 3))


# ---------------------------------------------------------------- persisted model


def _small_model(fitted_umap, blobs):
    from galscale.spectra.model import SpectralEmbeddingModel

    torch.manual_seed(0)
    vae = SpectralVAE(2459, hidden=(32, 16), latent_dim=16).eval()
    mixture = select_mixture(fitted_umap.embedding, k_range=(3, 4), n_restarts=1).mixture
    return SpectralEmbeddingModel(vae=vae, preprocess=pp.PreprocessConfig(), umap=fitted_umap,
                                  mixture=mixture)


def test_model_save_load_embed_and_tamper_detection(fitted_umap, blobs, sim, tmp_path):
    from galscale.registry import ArtifactError
    from galscale.spectra.model import SpectralEmbeddingModel, embed_batch

    model = _small_model(fitted_umap, blobs)
    model.save(tmp_path / "m")
    back = SpectralEmbeddingModel.load(tmp_path / "m")
    batch = simulated_batch(sim).take(np.arange(0, 1200, 50))
    a, b = model.embed(batch), back.embed(batch)
    for key in ("latent_00", "umap_x", "cluster", "recon_mse", "flags"):
        np.testing.assert_array_equal(a[key], b[key])
    cols = embed_batch(batch.to_table(), back)  # the Ray Data per-batch function, without Ray
    np.testing.assert_array_equal(cols["cluster"], a["cluster"])
    assert len(cols["id"]) == len(batch) and "flag_reason" in cols
    # the reconstruction-error flag: rows above the persisted threshold keep latent and map
    # position but lose their cluster, with the reason; the threshold survives save/load
    model.recon_mse_max = float(np.nanmedian(a["recon_mse"]))
    model.save(tmp_path / "m2")
    flagged = SpectralEmbeddingModel.load(tmp_path / "m2").embed(batch)
    high = np.isfinite(a["recon_mse"]) & (a["recon_mse"] > model.recon_mse_max)
    assert 0 < high.sum() < len(batch)
    assert np.all(flagged["cluster"][high] == -1) and np.all(flagged["cluster"][~high] == a["cluster"][~high])
    assert np.all((flagged["flags"][high] & pp.FLAG_HIGH_RECON_ERROR) != 0)
    assert all("reconstruction_error" in r for r in flagged["flag_reason"][high])
    np.testing.assert_array_equal(flagged["umap_x"], a["umap_x"])
    mix = tmp_path / "m" / "mixture.npz"
    np.savez(mix, weights=np.ones(3) / 3, means=np.zeros((3, 2)), covariances=np.stack([np.eye(2)] * 3))
    with pytest.raises(ArtifactError, match="SHA-256"):
        SpectralEmbeddingModel.load(tmp_path / "m")


@pytest.mark.skipif(not (SHIPPED / "embedding.json").exists(), reason="no shipped spectral model")
def test_shipped_model_assigns_new_simulated_spectra_to_population_clusters():
    from sklearn.metrics import adjusted_rand_score

    from galscale.spectra.model import SpectralEmbeddingModel, assign

    model = SpectralEmbeddingModel.load("spectral")
    new = simulate_spectra(900, seed=4242, first_id=10_000)
    cluster, prob = assign(model, simulated_batch(new))
    ok = cluster >= 0
    galaxy = new.population != "noisy"
    assert ok[galaxy].mean() > 0.98  # galaxies are clustered ...
    assert (~ok[~galaxy]).mean() > 0.8  # ... noise/artifact spectra mostly flagged instead
    groups = np.where(ok, cluster, -1)  # flagged spectra as one group: no spectrum left out
    assert adjusted_rand_score(new.label, groups) > 0.85
    assert np.all(prob[ok] > 0)


@pytest.mark.skipif(not CEERS.exists(), reason="../shared/data absent")
def test_real_ceers_spectrum_reads_preprocesses_embeds_and_assigns():
    import dataclasses

    from galscale.spectra.model import SpectralEmbeddingModel

    spec = read_msaexp_fits(CEERS, z=4.2341)
    assert len(spec.flux[0]) == 414 and spec.wave[0][0] == pytest.approx(0.58)
    pre = pp.preprocess_spectra(spec.wave, spec.flux, spec.err, spec.z)
    # this test file has flux only above 1.445 um (rest 2761 A): 1500 A is not covered
    assert pre.flag_reason[0] == "no_valid_flux_near_norm_wavelength"
    if not (SHIPPED / "embedding.json").exists():
        pytest.skip("no shipped spectral model")
    model = SpectralEmbeddingModel.load("spectral")
    strict = model.embed(spec)
    assert strict["cluster"][0] == -1 and strict["flag_reason"][0] != ""
    model.preprocess = dataclasses.replace(model.preprocess, norm_fallback=True)
    cols = model.embed(spec)
    assert cols["flags"][0] == pp.FLAG_NORM_FALLBACK
    assert 0 <= cols["cluster"][0] < model.mixture.k and 0 < cols["cluster_prob"][0] <= 1
    assert np.isfinite(cols["umap_x"][0]) and np.isfinite(cols["recon_mse"][0])


def test_spectra_batch_rejects_mismatched_columns():
    with pytest.raises(ValueError, match="rows"):
        SpectraBatch(ids=[1, 2], z=[1.0], wave=[np.ones(2)] * 2, flux=[np.ones(2)] * 2,
                     err=[np.ones(2)] * 2)


def test_sliced_arrow_batches_keep_their_own_rows(sim):
    # Ray Data hands map_batches zero-copy slices of a larger table
    table = simulated_batch(sim).take(np.arange(30)).to_table()
    part = batch_from_columns(table.slice(7, 5))
    np.testing.assert_array_equal(part.ids, sim.ids[7:12])
    np.testing.assert_allclose(part.flux[0], sim.flux[7])


def test_match_labels_undoes_a_relabelling_and_maps_extra_clusters_to_their_majority():
    from galscale.spectra.evaluate import match_labels

    reference = np.repeat([0, 1, 2], 10)
    other = np.repeat([2, 0, 1], 10)  # same partition, other label names
    other[25:] = 3  # an extra refit cluster carved out of reference cluster 2
    mapping = match_labels(reference, other)
    assert mapping[2] == 0 and mapping[0] == 1 and mapping[1] == 2 and mapping[3] == 2
    mapped = np.array([mapping[int(c)] for c in other])
    np.testing.assert_array_equal(mapped, reference)
