"""Redshift-class CNN: shapes, preprocessing invariances and flags, loss, artefact round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galscale.config import NIRCAM_BANDS, REDSHIFT_CLASSES
from galscale.models.redshift import (
    SURVEY_CLASS_PRIORS,
    augment_multiband,
    build_redshift_classifier,
    classifier_flops,
    input_channels,
    multiband_quality,
    preprocess_multiband,
    preprocess_multiband_with_quality,
    probabilities_from_input,
    redshift_probabilities,
    redshift_probabilities_with_quality,
    shift_class_priors,
)
from galscale.train.redshift import BUILDER, RedshiftTask, class_weights

SIZE = 64


def _blobs(n: int, seed: int, offset: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian sources near the centre with band-dependent fluxes, unit noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    c = (SIZE - 1) / 2
    flux = rng.normal(0, 1.0, (n, 7, SIZE, SIZE)).astype(np.float32)
    for i in range(n):
        sigma = rng.uniform(1.5, 4.0)
        prof = np.exp(-((yy - c - offset[0]) ** 2 + (xx - c - offset[1]) ** 2) / (2 * sigma**2))
        sed = rng.uniform(0.0, 1.0, 7) * rng.uniform(200, 2000)
        flux[i] += (sed[:, None, None] * prof / prof.sum() * 10).astype(np.float32)
    return flux, np.ones_like(flux)


@pytest.fixture(scope="module")
def blobs():
    return _blobs(6, seed=3)


def test_forward_and_probability_shapes(blobs):
    torch.manual_seed(0)
    model = build_redshift_classifier()
    flux, err = blobs
    assert model(torch.zeros(2, input_channels(7), SIZE, SIZE)).shape == (2, len(REDSHIFT_CLASSES))
    probs = redshift_probabilities(model, flux, err)
    assert probs.dtype == np.float32 and probs.shape == (len(flux), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.training  # inference restores the caller's mode
    flops = classifier_flops(model)
    assert 5e6 < flops < 2e8


def test_preprocessing_commutes_with_rotations_and_flips(blobs):
    flux, err = blobs
    x = preprocess_multiband(flux, err).numpy()
    for k in (1, 2, 3):
        xr = preprocess_multiband(np.rot90(flux, k, axes=(2, 3)), np.rot90(err, k, axes=(2, 3)))
        np.testing.assert_allclose(xr.numpy(), np.rot90(x, k, axes=(2, 3)), atol=1e-5)
    xf = preprocess_multiband(flux[..., ::-1], err[..., ::-1]).numpy()
    np.testing.assert_allclose(xf, x[..., ::-1], atol=1e-5)


def test_preprocessing_is_unit_free_and_keeps_colours(blobs):
    flux, err = blobs
    x = preprocess_multiband(flux, err).numpy()
    np.testing.assert_allclose(preprocess_multiband(flux * 37.0, err * 37.0).numpy(), x, atol=1e-4)
    # a redder source: same footprint, F444W doubled -> F444W channel larger, others not larger
    red = flux.copy()
    red[:, 6] *= 2.0
    xr = preprocess_multiband(red, err).numpy()
    assert (np.abs(xr[:, 6]).sum(axis=(1, 2)) > np.abs(x[:, 6]).sum(axis=(1, 2))).all()
    assert (np.abs(xr[:, 0]).sum(axis=(1, 2)) <= np.abs(x[:, 0]).sum(axis=(1, 2)) + 1e-4).all()


def test_significance_planes_tell_a_dropout_from_a_detection(blobs):
    """Planes 7-13 hold each band's footprint S/N (asinh-compressed), constant on the footprint
    and zero off it: a band with no source light reads ~0, a bright band reads high."""
    flux, err = (a.copy() for a in blobs)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    c = (SIZE - 1) / 2
    rng = np.random.default_rng(4)
    flux[:, 0] = rng.normal(0, 1.0, flux[:, 0].shape)  # F090W: noise only (a dropout)
    flux[:, 4] += 500 * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / 8.0)  # F277W: bright
    x = preprocess_multiband(flux, err).numpy()
    assert x.shape == (len(flux), input_channels(7), SIZE, SIZE)
    sig = x[:, 7:]
    on = sig[:, 4] != 0
    assert on[:, 32, 32].all() and not on[:, 0, 0].any()  # on the footprint only
    for i in range(len(flux)):
        vals = sig[i][:, on[i]]
        assert np.ptp(vals, axis=1).max() < 1e-6  # one value per band
        assert abs(vals[0, 0]) < np.arcsinh(4 / 3) < vals[4, 0]  # |S/N| < 4 vs bright


def test_neighbour_is_masked_out():
    flux, err = _blobs(2, seed=5)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    neighbour = 3000 * np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 8.0)
    flux[:, :, :, :] += neighbour.astype(np.float32)
    x, q = preprocess_multiband_with_quality(flux, err)
    assert not q.no_central_source.any()
    assert float(x[:, :, 4:13, 4:13].abs().max()) == 0.0  # the neighbour's pixels are zeroed
    assert float(x[:, :, 28:36, 28:36].abs().sum()) > 0.0


def test_missing_bands_are_zeroed_and_flagged(blobs):
    flux, err = (a.copy() for a in blobs)
    flux[0, 1] = np.nan  # band F115W absent in cutout 0
    err[1, 5] = np.inf  # band F356W without an error map in cutout 1
    flux[2, 3, :10] = np.nan  # a few bad rows: band kept, pixels zeroed
    x, q = preprocess_multiband_with_quality(flux, err)
    assert q.missing_bands.shape == (len(flux), len(NIRCAM_BANDS))
    assert q.missing_bands[0, 1] and q.missing_bands[1, 5] and not q.missing_bands[2, 3]
    assert q.missing_bands.sum() == 2
    assert float(x[0, 1].abs().max()) == 0.0 and float(x[1, 5].abs().max()) == 0.0
    assert float(x[0, 7 + 1].abs().max()) == 0.0 and float(x[1, 7 + 5].abs().max()) == 0.0
    assert float(x[2, 3, :10].abs().max()) == 0.0 and torch.isfinite(x).all()


def test_probabilities_with_quality_is_one_pass_of_both(blobs):
    torch.manual_seed(0)
    model = build_redshift_classifier(spatial_channels=[16, 32], spatial_strides=[2, 2])
    flux, err = (a.copy() for a in blobs)
    flux[0, 2] = np.nan  # one band absent
    probs, quality = redshift_probabilities_with_quality(model, flux, err)
    np.testing.assert_array_equal(probs, redshift_probabilities(model, flux, err))
    np.testing.assert_array_equal(quality.missing_bands, multiband_quality(flux, err).missing_bands)
    assert quality.missing_bands[0, 2] and quality.missing_bands.sum() == 1


def test_empty_cutout_is_flagged_not_dropped():
    flux = np.zeros((1, 7, SIZE, SIZE), np.float32)
    x, q = preprocess_multiband_with_quality(flux, np.ones_like(flux))
    assert q.no_central_source[0] and float(x.abs().max()) == 0.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="flux and err"):
        preprocess_multiband(np.zeros((2, 7, 64, 64)), np.zeros((2, 7, 64, 63)))
    with pytest.raises(ValueError, match="square"):
        preprocess_multiband(np.zeros((2, 7, 64, 63)), np.ones((2, 7, 64, 63)))


def test_augmentation_is_seeded_and_keeps_shape(blobs):
    flux, err = blobs
    a = augment_multiband(flux[0], err[0], np.random.default_rng(1))
    b = augment_multiband(flux[0], err[0], np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == a[1].shape == flux[0].shape and a[0].dtype == np.float32


def test_class_weights_balance_the_loss():
    w = class_weights(np.array([0] * 6 + [1] * 3 + [2]))
    counts = np.array([6, 3, 1])
    np.testing.assert_allclose((w.numpy() * counts), [10 / 3] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="brown_dwarf"):
        class_weights(np.array([0, 1, 1]))


def test_loss_decreases_on_a_tiny_batch(blobs):
    torch.manual_seed(0)
    # a larger learning rate than the 5e-4 default so that 10 steps suffice (measured: loss
    # ratio 0.05-0.09 after 10 steps at 2e-3 for torch seeds 0-2; 0.23-0.37 at 5e-4)
    task = RedshiftTask(learning_rate=2e-3,
                        architecture={"spectral_channels": 8, "spatial_channels": [16, 16],
                                      "spatial_strides": [2, 2], "dense": 16, "dropout": 0.0,
                                      "spatial_dropout": 0.0})
    task._weights = class_weights(np.array([0, 0, 1, 1, 2, 2]))
    model = task.build_model()
    flux, err = blobs
    # the network is fully convolutional with global pooling: a central 32x32 crop of the
    # preprocessed cutouts exercises the same task loss and optimiser at a quarter of the cost
    x = preprocess_multiband(flux, err)[:, :, 16:48, 16:48].contiguous()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    opt = task.optimizer(model.parameters())
    losses = []
    for _ in range(10):
        loss, metrics = task.loss(model, (x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]
    assert {"accuracy", "recall_low_z"} <= set(metrics)


def test_artifact_round_trip_gives_identical_probabilities(blobs, tmp_path):
    from galscale.registry import load_artifact, load_model, save_artifact

    torch.manual_seed(1)
    model = build_redshift_classifier(spatial_channels=[16, 32], spatial_strides=[2, 2])
    flux, err = blobs
    x = preprocess_multiband(flux, err)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):  # move weights and batch-norm statistics away from their initial values
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    arch = {"spatial_channels": [16, 32], "spatial_strides": [2, 2]}
    save_artifact(model, tmp_path / "a", name="redshift", builder=BUILDER, architecture=arch,
                  training={"command": "test"})
    loaded = load_model(tmp_path / "a")
    assert not loaded.training
    np.testing.assert_array_equal(redshift_probabilities(loaded, flux, err, class_priors=None),
                                  probabilities_from_input(model, x))
    # the default output is the same network output shifted to the survey priors
    np.testing.assert_allclose(
        redshift_probabilities(loaded, flux, err),
        shift_class_priors(probabilities_from_input(model, x), (1, 1, 1), SURVEY_CLASS_PRIORS),
        rtol=1e-6)
    assert load_artifact(tmp_path / "a").config["architecture"] == arch


def test_bayes_prior_shift_by_hand_and_round_trip():
    p = np.array([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]], dtype=np.float32)
    q = shift_class_priors(p, (1 / 3, 1 / 3, 1 / 3), (0.79, 0.20, 0.01))
    # by hand: 0.4*0.79, 0.4*0.20, 0.2*0.01 = 0.316, 0.080, 0.002 (sum 0.398)
    np.testing.assert_allclose(q[0], [0.316 / 0.398, 0.080 / 0.398, 0.002 / 0.398], rtol=1e-6)
    assert q[1, 2] < p[1, 2] and q[1, 0] > p[1, 0]  # rare class loses, common class gains
    np.testing.assert_allclose(shift_class_priors(q, (0.79, 0.20, 0.01), (1, 1, 1)), p, rtol=1e-5)
    np.testing.assert_allclose(shift_class_priors(p, (2, 2, 2), (1, 1, 1)), p, rtol=1e-6)
    for bad in ((0.5, 0.5), (0.5, 0.5, 0.0), (1, np.nan, 1)):
        with pytest.raises(ValueError, match="class priors"):
            shift_class_priors(p, (1, 1, 1), bad)
    with pytest.raises(ValueError, match="class_priors"):
        redshift_probabilities(build_redshift_classifier(), np.ones((1, 7, 64, 64)),
                               np.ones((1, 7, 64, 64)), class_priors="flat")


def test_training_priors_follow_the_class_weighting_and_survive_the_artifact(tmp_path):
    from galscale.registry import load_model
    from galscale.train.loop import TrainConfig
    from galscale.train.redshift import write_artifact

    balanced = RedshiftTask().build_model()
    np.testing.assert_allclose(balanced.training_class_priors, [1 / 3] * 3)
    task = RedshiftTask(class_weighting="none", train_fractions=(0.5, 0.3, 0.2),
                        architecture={"spatial_channels": [8], "spatial_strides": [2],
                                      "spectral_channels": 4, "dense": 8})
    model = task.build_model()
    np.testing.assert_allclose(model.training_class_priors, [0.5, 0.3, 0.2])
    np.testing.assert_allclose(model.survey_class_priors, SURVEY_CLASS_PRIORS)
    cfg = write_artifact(task, TrainConfig(), model, [{"val_loss": 1.0}], 1, str(tmp_path / "a"),
                         "test", 0.0)
    assert cfg["architecture"]["training_class_priors"] == pytest.approx([0.5, 0.3, 0.2])
    assert cfg["architecture"]["survey_class_priors"] == pytest.approx(list(SURVEY_CLASS_PRIORS))
    np.testing.assert_allclose(load_model(tmp_path / "a").training_class_priors, [0.5, 0.3, 0.2])
