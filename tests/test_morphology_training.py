"""Both morphology tasks run through the real Ray Train loop and write loadable artefacts."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import numpy as np
import pytest
import ray
import torch

from galscale.cli import add_train_config_arguments, train_config_from_args
from galscale.config import DEFAULT_NOISE, NoiseLaw
from galscale.models.morphology import DiskClassifierInference, disk_probability
from galscale.registry import load_artifact, load_model
from galscale.train import denoiser as denoiser_task
from galscale.train import morphology as morphology_task


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


def _args(module, argv: list[str]) -> tuple[argparse.Namespace, object]:
    parser = argparse.ArgumentParser()
    add_train_config_arguments(parser)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return args, train_config_from_args(args)


def test_train_denoiser_then_classifier_on_its_output(local_ray, tmp_path) -> None:
    common = ["--epochs", "1", "--batch-size", "2", "--n-sim", "6", "--storage-path",
              str(tmp_path / "runs"), "--cpus-per-worker", "1"]
    args, cfg = _args(denoiser_task, [*common, "--realisations", "1", "--max-steps", "2",
                                      "--noise-sigma", "0.02", "0.2", "--noise-log-uniform",
                                      "--out", str(tmp_path / "den")])
    assert denoiser_task.run(args, cfg) == str(tmp_path / "den")
    den = load_artifact(tmp_path / "den")
    assert den.config["training"]["steps"] == 2
    assert den.config["training"]["data_description"]["realisations"] == 1
    assert den.config["training"]["data_description"]["noise"] == {
        "sigma_min": 0.02, "sigma_max": 0.2, "log_uniform": True}
    assert 0 < den.config["metrics"]["forward_flops_per_cutout"] <= 1.5e9
    model = load_model(tmp_path / "den")
    with torch.no_grad():
        assert model.export()(torch.rand(1, 3, 256, 256)).shape == (1, 3, 256, 256)

    args, cfg = _args(morphology_task, [*common, "--realisations", "1", "--max-steps", "2",
                                        "--denoiser", str(tmp_path / "den"),
                                        "--out", str(tmp_path / "cls")])
    morphology_task.run(args, cfg)
    cls = load_artifact(tmp_path / "cls")
    assert cls.config["training"]["data_description"]["denoiser_sha256"] == den.sha256
    assert cls.config["training"]["steps"] == 2
    assert cls.config["training"]["data_description"]["noise"] == asdict(DEFAULT_NOISE)
    classifier = load_model(tmp_path / "cls")
    assert isinstance(classifier, DiskClassifierInference)
    p = disk_probability(classifier, np.random.default_rng(0).random((2, 3, 256, 256)))
    assert p.shape == (2,) and np.isfinite(p).all()


def test_raw_and_denoised_inputs_share_contamination() -> None:
    galaxies = denoiser_task.load_clean_galaxies(None, n_sim=2, sim_seed=5, split="train")
    raw, labels = morphology_task.classifier_inputs(galaxies, input_kind="raw", realisations=2,
                                                    seed=3)
    again, _ = morphology_task.classifier_inputs(galaxies, input_kind="raw", realisations=2,
                                                 seed=3)
    assert raw.shape == (4, 3, 256, 256) and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, again)
    np.testing.assert_array_equal(labels, np.repeat(galaxies.labels, 2))
    with pytest.raises(ValueError, match="needs a denoiser"):
        morphology_task.classifier_inputs(galaxies, input_kind="denoised", realisations=1, seed=3)
    # a stronger noise law changes the pictures, not the contaminants' draws' determinism
    noisier, _ = morphology_task.classifier_inputs(galaxies, input_kind="raw", realisations=2,
                                                   seed=3, noise=NoiseLaw(0.1, 0.2))
    assert np.std(noisier.astype(float) - raw) > 10
