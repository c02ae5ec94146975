"""Semi-supervised branch: footprint photometry, t-SNE + HDBSCAN + random forest on sim stamps."""

from __future__ import annotations

import numpy as np
import pytest

from galscale.config import NJY_ZEROPOINT_AB
from galscale.semisupervised import cutout_photometry, semisupervised_clusters
from galscale.train.redshift import HELDOUT_SEED_BASE, simulate_cutouts


def test_photometry_of_a_known_gaussian():
    yy, xx = np.mgrid[0:64, 0:64]
    sigma = 2.5
    prof = np.exp(-((yy - 31.5) ** 2 + (xx - 31.5) ** 2) / (2 * sigma**2))
    prof /= prof.sum()
    totals = np.array([100, 200, 400, 800, 1600, 3200, 6400.0])
    rng = np.random.default_rng(0)
    flux = prof[None, None] * totals[None, :, None, None] + rng.normal(0, 0.5, (1, 7, 64, 64))
    err = np.full_like(flux, 0.5)
    flux[0, 0] = np.nan  # F090W missing: its magnitude is NaN, the rest are measured
    phot = cutout_photometry(flux.astype(np.float32), err.astype(np.float32))
    assert np.isnan(phot.mags[0, 0]) and phot.found[0]
    np.testing.assert_allclose(phot.mags[0, 1:], NJY_ZEROPOINT_AB - 2.5 * np.log10(totals[1:]),
                               atol=0.08)
    assert phot.flux_radius[0] == pytest.approx(1.1774 * sigma, rel=0.05)  # Gaussian r_half


def test_faint_sources_get_finite_magnitudes():
    rng = np.random.default_rng(1)
    flux = rng.normal(0, 1.0, (3, 7, 64, 64)).astype(np.float32)  # pure noise: flux ~ 0 or < 0
    phot = cutout_photometry(flux, np.ones_like(flux))
    assert np.isfinite(phot.mags).all() and np.isfinite(phot.flux_radius).all()


@pytest.fixture(scope="module")
def sim_sample():
    flux, err, labels, meta = simulate_cutouts(160, HELDOUT_SEED_BASE + 901, (0.45, 0.45, 0.1))
    return cutout_photometry(flux, err), labels, meta


def test_clusters_silhouette_and_forest_on_simulated_stamps(sim_sample):
    phot, labels, meta = sim_sample
    z = np.asarray(meta.column("redshift").to_numpy(zero_copy_only=False), dtype=float)
    res = semisupervised_clusters(phot.mags, phot.flux_radius, labels, z, seed=0)
    assert res.embedding.shape == (len(labels), 2)
    assert res.n_clusters >= 2 and -1.0 <= res.silhouette <= 1.0
    assert res.contingency.sum() == len(labels)
    assert res.class_confusion.sum() == len(labels)
    assert res.forest_cluster_accuracy > 0.6  # the forest reproduces the clusters
    # cluster membership (noise included) is not independent of the class: chi-square test
    # (seeds fixed, so deterministic; measured p = 1.3e-5, 5.6e-10, 6.0e-9 for sim seeds
    # HELDOUT_SEED_BASE + 901/902/903 and t-SNE seeds 0 and 1, well below 1e-3)
    from scipy.stats import chi2_contingency

    table = res.contingency[:, res.contingency.sum(axis=0) > 0]
    assert chi2_contingency(table).pvalue < 1e-3
    assert 0.0 <= res.summary()["class_accuracy_via_clusters"] <= 1.0
    # the forest assigns new sources without re-embedding: it reproduces its own training labels
    clustered = res.clusters >= 0
    x = np.column_stack([phot.mags, np.log10(np.clip(phot.flux_radius, 0.1, None))])
    assert x.shape[1] == res.forest.n_features_in_ and clustered.sum() > len(labels) // 2


def test_too_few_sources_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 20"):
        semisupervised_clusters(np.zeros((5, 7)), np.ones(5))
