"""Evaluation maths of the morphology models: PSNR, SSIM, classification report, injection."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from galscale.evaluate.morphology import (
    DEFAULT_JWST_DIR,
    classification_report,
    injection_recovery,
    psnr,
    real_noise_field,
    ssim,
)
from galscale.models.denoiser import DenoiserConfig, UNetVAE


def test_psnr_and_ssim_known_values() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((2, 3, 48, 48)).astype(np.float32)
    np.testing.assert_allclose(psnr(truth + 0.01, truth), 40.0, atol=1e-4)  # MSE 1e-4
    np.testing.assert_allclose(ssim(truth, truth), 1.0, atol=1e-12)
    slightly = truth + rng.normal(0, 0.02, truth.shape)
    very = truth + rng.normal(0, 0.2, truth.shape)
    assert (ssim(very, truth) < ssim(slightly, truth)).all()
    assert (ssim(slightly, truth) < 1.0).all()
    with pytest.raises(ValueError):
        ssim(truth[0], truth[0])


def test_classification_report() -> None:
    labels = np.array([0, 0, 1, 1])
    report = classification_report(labels, np.array([0.1, 0.6, 0.4, 0.9]))
    assert report["accuracy"] == 0.5 and report["roc_auc"] == 0.75 and report["n_disk"] == 2


def test_injection_recovery_on_fits_noise(tmp_path) -> None:
    rng = np.random.default_rng(1)
    for k in range(2):
        folder = tmp_path / "task" / f"dataset_{k}"
        folder.mkdir(parents=True)
        data = rng.normal(0, 0.02, (90, 90))
        data[40:50, 40:50] += 1.0  # a "galaxy" that must be masked out of the noise field
        fits.writeto(folder / "data.fits", data)
        fits.writeto(folder / "noise_map.fits", np.full((90, 90), 0.02))
    field = real_noise_field(fits.getdata(folder / "data.fits"),
                             fits.getdata(folder / "noise_map.fits"), rng, 128)
    assert field.shape == (128, 128) and np.abs(field).max() < 0.2  # the source was masked
    truth = np.zeros((1, 3, 64, 64), np.float32)
    truth[:, :, 24:40, 24:40] = 0.7
    model = UNetVAE(DenoiserConfig(widths=(4, 8), latent_channels=2)).export()
    report = injection_recovery(model, tmp_path, truth, peak_snr=10.0)
    assert report["n"] == 1 and report["real_cutouts_used"] == 2
    assert np.isfinite(report["psnr_noisy_db"]) and report["psnr_noisy_db"] < 40
    assert "skipped" in injection_recovery(model, tmp_path / "absent", truth)


@pytest.mark.skipif(not DEFAULT_JWST_DIR.is_dir(), reason="../shared/data/jwst_real_cutouts absent")
def test_real_jwst_noise_field() -> None:
    folder = next(p.parent for p in sorted(DEFAULT_JWST_DIR.rglob("data.fits*")))
    data = fits.getdata(next(folder.glob("data.fits*")))
    field = real_noise_field(data, fits.getdata(next(folder.glob("noise_map.fits*"))),
                             np.random.default_rng(0), 256)
    assert field.shape == (256, 256) and np.isfinite(field).all()
    assert np.std(field) < np.std(data)  # the real galaxy's light is gone, the noise is left


def test_evaluate_morphology_writes_both_readings_of_the_claim(tmp_path) -> None:
    """The evaluation command end to end on a few held-out simulated stamps with the shipped
    models: denoising quality, the two-classifier comparison and the same-model table."""
    import json

    from galscale.evaluate.morphology import NOISE_SWEEP, evaluate_morphology

    report = evaluate_morphology(tmp_path, images=None, n_sim=6, n_injections=2,
                                 jwst_dir=tmp_path / "absent", noise=NOISE_SWEEP[0])
    saved = json.loads((tmp_path / "morphology_evaluation.json").read_text())
    assert saved["classification"]["accuracy_gain"] == pytest.approx(
        report["classification"]["accuracy_gain"])
    assert saved["heldout"]["n_sim"] == 6 and saved["heldout"]["n_real"] == 0
    assert saved["denoising"]["all"]["n"] == 6
    same = saved["classification"]["same_model"]
    assert set(same) == {"classifier_denoised", "classifier_raw"}
    for cells in same.values():
        assert set(cells) == {"raw_input", "denoised_input", "clean_input"}
        assert all(0.0 <= c["accuracy"] <= 1.0 and c["n"] == 6 for c in cells.values())
    # the two-classifier cells are the diagonal of the same-model table
    assert same["classifier_denoised"]["denoised_input"] == saved["classification"]["denoised_input"]
    assert same["classifier_raw"]["raw_input"] == saved["classification"]["raw_input"]
    assert "skipped" in saved["injection_recovery_jwst"]
    assert (tmp_path / "morphology_roc.png").is_file()
    # the noise sweep: the same galaxies, noise 1x / 2x / 4x the default law
    sweep = saved["noise_sweep"]
    assert [row["noise"]["sigma_max"] for row in sweep] == pytest.approx([0.06, 0.12, 0.24])
    assert all(row["raw_input"]["n"] == 6 for row in sweep)
    # under the headline's own law the sweep repeats the headline comparison exactly
    assert sweep[0]["raw_input"] == saved["classification"]["raw_input"]
    assert sweep[0]["denoised_input"] == saved["classification"]["denoised_input"]
    assert sweep[0]["psnr_noisy_db"] > sweep[1]["psnr_noisy_db"] > sweep[2]["psnr_noisy_db"]
