"""Template-fit photo-zs that split the held-out sources into photo-z unaliased / aliased."""

from __future__ import annotations

import numpy as np

from galscale.config import NIRCAM_BANDS
from galscale.evaluate.photoz import Z_BOUNDARY, fit_photoz
from galscale.sim.population import sample_population


def _population(n: int, z_class: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return sample_population(np.array(["disk"] * n, dtype=object),
                             np.array([z_class] * n, dtype=object), rng)


def _fluxes(cols: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([cols[f"flux_{b}"] for b in NIRCAM_BANDS], axis=1)


def test_bright_sources_get_their_redshift_and_are_not_aliased():
    low, high = _population(200, "low_z", 1), _population(200, "high_z", 2)
    for cols, side in ((low, False), (high, True)):
        flux = _fluxes(cols)
        err = np.full_like(flux, 0.02 * flux[:, NIRCAM_BANDS.index("F277W")].min())
        fit = fit_photoz(flux, err)
        z = cols["redshift"]
        clear = (z < 4.5) | (z > 6.5)
        assert ((fit.z_best >= Z_BOUNDARY)[clear] == side).all()
        assert np.median(np.abs(fit.z_best - z) / (1 + z)) < 0.03
        assert not fit.aliased[clear].any()
        assert ((fit.p_high > 0.5)[clear] == side).all()


def test_noisy_photometry_is_aliased_and_missing_bands_are_left_out():
    cols = _population(50, "high_z", 3)
    flux = _fluxes(cols)
    f277 = flux[:, NIRCAM_BANDS.index("F277W")][:, None]
    noisy = fit_photoz(flux, np.broadcast_to(f277, flux.shape))  # S/N ~1 per band
    assert noisy.aliased.mean() > 0.9
    err = 0.02 * f277 * np.ones_like(flux)
    gone = flux.copy()
    gone[:, 0] = np.nan  # F090W absent: the fit uses the other six bands
    with_nan = fit_photoz(gone, err)
    zero_err = err.copy()
    zero_err[:, 0] = 0.0  # an error of 0 also means "no measurement"
    np.testing.assert_allclose(with_nan.chi2_low, fit_photoz(flux, zero_err).chi2_low)
    nothing = fit_photoz(np.full((2, 7), np.nan), np.ones((2, 7)))
    assert np.isnan(nothing.z_best).all() and nothing.aliased.all()


def test_cutout_photoz_agrees_with_truth_on_unaliased_simulated_stamps():
    from galscale.semisupervised import cutout_photometry
    from galscale.sim.stamps import redshift_stamps

    flux, err, labels, meta = redshift_stamps(120, 9_100_001, class_fractions=(0.5, 0.5, 0.0))
    phot = cutout_photometry(flux, err)
    fit = fit_photoz(phot.flux, phot.flux_err)
    truth_high = np.asarray(labels) == 1
    clear = ~fit.aliased
    assert clear.sum() >= 40
    agree = ((fit.z_best >= Z_BOUNDARY) == truth_high)[clear].mean()
    assert agree >= 0.95
