"""Redshift training task (data, weights, augmentation) and the shipped weights on fresh
held-out stamps. The Ray Train loop itself is tested in test_train_loop.py; the shipped
artefact was produced through it by `galscale train redshift`."""

from __future__ import annotations

import numpy as np
import pytest

from galscale.config import REDSHIFT_CLASSES
from galscale.evaluate.redshift import (
    BALANCED_FRACTIONS,
    REALISTIC_FRACTIONS,
    classification_metrics,
    remove_band,
)
from galscale.models.redshift import input_channels, redshift_probabilities
from galscale.registry import load_artifact, load_model
from galscale.train.redshift import HELDOUT_SEED_BASE, RedshiftTask, simulate_cutouts


@pytest.fixture(scope="module")
def heldout():
    # a seed no training run and no default evaluation uses
    return simulate_cutouts(150, HELDOUT_SEED_BASE + 977, BALANCED_FRACTIONS)


def test_shipped_weights_beat_chance_on_fresh_heldout_stamps(heldout):
    flux, err, labels, _ = heldout
    model = load_model("redshift")
    # balanced test set: shift to its own (balanced) priors, i.e. the network's output
    m = classification_metrics(labels, redshift_probabilities(model, flux, err,
                                                              class_priors=BALANCED_FRACTIONS))
    assert m["accuracy"] > 0.8, m  # chance is 1/3
    for name in REDSHIFT_CLASSES:
        assert m["per_class"][name]["recall"] > 0.6, (name, m)
    # removing F200W (the paper's most critical band) must not help
    f, e = remove_band(flux, err, 3)
    m_no = classification_metrics(labels, redshift_probabilities(model, f, e,
                                                                 class_priors=BALANCED_FRACTIONS))
    assert m_no["accuracy"] <= m["accuracy"]


def test_shipped_artifact_records_its_provenance():
    cfg = load_artifact("redshift").config
    assert cfg["builder"] == "galscale.models.redshift:build_redshift_classifier"
    assert "train redshift" in cfg["training"]["command"]
    assert cfg["metrics"]["forward_flops_per_cutout"] > 0
    assert cfg["training"]["history"]
    # the priors of the default Bayes prior shift are recorded with the weights
    assert cfg["architecture"]["survey_class_priors"] == pytest.approx(list(REALISTIC_FRACTIONS))
    assert cfg["architecture"]["training_class_priors"] == pytest.approx([1 / 3] * 3)


def test_task_datasets_are_deterministic_weighted_and_augmented():
    import torch

    task = RedshiftTask(n_train=12, n_val=3, band_dropout=1.0)
    train_a, val_a = task.datasets(seed=5)
    w = task._weights.numpy()
    counts = np.bincount(train_a.labels.numpy(), minlength=3)
    np.testing.assert_allclose(w * counts, [counts.sum() / 3] * 3, rtol=1e-5)
    train_b, val_b = task.datasets(seed=5)
    np.testing.assert_array_equal(train_a.flux, train_b.flux)
    torch.testing.assert_close(val_a.tensors[0], val_b.tensors[0])
    torch.manual_seed(0)
    x0, y0 = train_a[0]
    torch.manual_seed(0)
    x1, _ = train_a[0]
    torch.manual_seed(1)
    x2, _ = train_a[0]
    assert x0.shape == (input_channels(7), 64, 64) and y0.dtype == torch.int64
    torch.testing.assert_close(x0, x1)  # the loop seeds torch: same seed, same augmentation
    assert not torch.equal(x0, x2)
    # band_dropout=1: every training item has exactly one band zeroed
    assert int((x0.abs().amax(dim=(1, 2)) == 0).sum()) >= 1
    loss, metrics = task.loss(task.build_model(), (torch.stack([x0, x2]), torch.tensor([0, 2])))
    assert loss.ndim == 0 and np.isfinite(float(loss.detach())) and "accuracy" in metrics


def test_cosine_schedule_anneals_over_the_run_and_constant_has_none():
    import torch

    model = torch.nn.Linear(2, 2)
    task = RedshiftTask(lr_schedule="cosine", total_steps=20, learning_rate=5e-4)
    opt = task.optimizer(model.parameters())
    sched = task.scheduler(opt)
    rates = []
    for _ in range(20):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    assert all(a >= b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert rates[-1] == pytest.approx(0.02 * 5e-4)
    assert RedshiftTask().scheduler(RedshiftTask().optimizer(model.parameters())) is None
    with pytest.raises(ValueError, match="total_steps"):
        RedshiftTask(lr_schedule="cosine")
    with pytest.raises(ValueError, match="lr_schedule"):
        RedshiftTask(lr_schedule="step")


def test_training_options_reach_the_task():
    import argparse

    from galscale.train.loop import TrainConfig
    from galscale.train.redshift import add_arguments, task_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    default = task_from_args(parser.parse_args([]), TrainConfig())
    assert (default.noise_max, default.band_dropout) == (0.5, 0.15)
    task = task_from_args(parser.parse_args(["--noise-max", "0.25", "--band-dropout", "0.1",
                                             "--lr-schedule", "cosine", "--n-train", "640"]),
                          TrainConfig(epochs=3, batch_size=64))
    assert (task.noise_max, task.band_dropout, task.total_steps) == (0.25, 0.1, 30)


def test_equal_recall_weight_balances_the_galaxy_recalls_by_hand():
    from galscale.evaluate.redshift import equal_recall_weight, weight_high_z

    # low-z sources with p(high_z) / p(low_z) ratios 0.5 .. 1.1, high-z sources 1.2 .. 4: at
    # weight 1 two low-z sources are called high-z; a weight in (1/1.2, 1/1.1) frees them and
    # keeps every high-z one, so both recalls are 1
    ratios_lo = np.array([0.5, 0.8, 1.05, 1.1, 0.3])
    ratios_hi = np.array([1.2, 2.0, 4.0])
    p = np.concatenate([np.c_[np.ones(5), ratios_lo, 0.01 * np.ones(5)],
                        np.c_[np.ones(3), ratios_hi, 0.01 * np.ones(3)]])
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([0] * 5 + [1] * 3)
    keep = np.ones(len(y), dtype=bool)
    w = equal_recall_weight(y, p, keep)
    assert 1 / 1.2 < w < 1 / 1.1
    assert (weight_high_z(p, w).argmax(axis=1) == y).all()
    np.testing.assert_allclose(weight_high_z(p, w).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weight_high_z(p, 1.0), p, rtol=1e-6)
    with pytest.raises(ValueError, match="both low-z and high-z"):
        equal_recall_weight(y, p, y == 0)


def test_evaluation_reports_the_operating_point_chosen_off_the_test_sets(tmp_path):
    import json

    from galscale.evaluate.redshift import CALIBRATION_SEED_BASE, evaluate_redshift

    report = evaluate_redshift(load_model("redshift"), tmp_path, n_realistic=60, n_balanced=90,
                               ablation=False, semisupervised=False, model_source="redshift")
    op = json.loads((tmp_path / "metrics.json").read_text())["operating_point"]
    assert op == json.loads(json.dumps(report["operating_point"]))
    seeds = {report["realistic"]["simulation_seed"], report["balanced"]["simulation_seed"]}
    assert op["calibration_seed"] == CALIBRATION_SEED_BASE and op["calibration_seed"] not in seeds
    assert op["weight_high_z"] > 0 and op["calibration_n"] > 0
    for name in ("realistic", "balanced"):
        for sel in ("all", "snr>10"):
            m = op[name][sel]
            assert m["n"] == report[name][sel]["network_priors"]["n"]
            assert 0.5 < m["per_class"]["low_z"]["recall"] <= 1.0  # far above chance (1/3)
        bins = op[name]["recall_by_snr"]
        assert sum(b["n"] for b in bins) == report[name]["all"]["network_priors"]["n"]
        # the S/N > 10 sources split into photo-z unaliased + aliased, nothing lost
        n_snr = op[name]["snr>10"]["n"]
        assert op[name]["snr>10&unaliased"]["n"] + op[name]["snr>10&aliased"]["n"] == n_snr
        kept = [sum(int(v.split("/")[0]) for v in row["kept"].values())
                for row in op[name]["recall_by_alias_threshold"]]
        assert kept == sorted(kept, reverse=True) and kept[0] <= n_snr
        assert 0.5 < report[name]["snr>10&unaliased"]["template_fit_recall"]["low_z"] <= 1.0
    assert (tmp_path / "confusion_balanced.png").stat().st_size > 0
