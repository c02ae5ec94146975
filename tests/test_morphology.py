"""D16 disk classifier (real escnn): invariance, export equality, loss, registry round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galscale.models.morphology import (
    D16DiskClassifier,
    DiskClassifierInference,
    MorphologyConfig,
    architecture_dict,
    classifier_loss,
    disk_probability,
)
from galscale.registry import load_artifact, load_model, save_artifact
from galscale.train.morphology import BUILDER

TRANSFORMS = {
    "rot90": lambda x: torch.rot90(x, 1, (2, 3)),
    "rot180": lambda x: torch.rot90(x, 2, (2, 3)),
    "rot270": lambda x: torch.rot90(x, 3, (2, 3)),
    "flip_x": lambda x: torch.flip(x, (3,)),
    "flip_y": lambda x: torch.flip(x, (2,)),
    "transpose": lambda x: x.transpose(2, 3),
}


@pytest.fixture(scope="module")
def trained_escnn() -> D16DiskClassifier:
    """An escnn model with non-trivial batch-norm statistics and weights (a few steps)."""
    torch.manual_seed(0)
    model = D16DiskClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(8, 3, 256, 256)
    y = torch.tensor([0, 1] * 4)
    for _ in range(3):
        loss, _ = classifier_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def exported(trained_escnn) -> DiskClassifierInference:
    return trained_escnn.export()


def test_export_matches_escnn_eval_model(trained_escnn, exported) -> None:
    x = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    assert isinstance(exported, DiskClassifierInference)
    assert not any("escnn" in type(m).__module__ for m in exported.modules())
    with torch.no_grad():
        diff = (trained_escnn(x) - exported(x)).abs().max().item()
    assert diff < 1e-6


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_exported_output_invariant(exported, name) -> None:
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = exported(x)
        moved = exported(TRANSFORMS[name](x.contiguous()).contiguous())
        shifted = exported(torch.roll(x, 7, dims=3))  # not a D16 symmetry of the grid
    assert (moved - base).abs().max().item() < 1e-5
    assert (shifted - base).abs().max().item() > 1e-5  # the check can fail


def test_loss_decreases_on_tiny_batch() -> None:
    torch.manual_seed(0)
    model = D16DiskClassifier()
    x = torch.zeros(8, 3, 64, 64)
    x[:4, :, 24:40, 8:56] = 1.0  # elongated "disks"
    x[4:, :, 26:38, 26:38] = 1.0  # compact blobs
    y = torch.tensor([1] * 4 + [0] * 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss, _ = classifier_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    D16DiskClassifier().load_state_dict(model.state_dict())  # a training checkpoint reloads


def test_registry_round_trip_and_probabilities(tmp_path, trained_escnn, exported) -> None:
    save_artifact(exported, tmp_path / "m", name="morphology", builder=BUILDER,
                  architecture=architecture_dict(trained_escnn.config), training={"test": True})
    loaded = load_model(tmp_path / "m")
    x = np.random.default_rng(3).random((5, 3, 256, 256), dtype=np.float32)
    p = disk_probability(loaded, x)
    assert p.shape == (5,) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(p, disk_probability(exported, x))
    with pytest.raises(ValueError, match="NaN"):
        disk_probability(loaded, np.full((1, 3, 256, 256), np.nan, np.float32))
    with pytest.raises(ValueError, match="odd"):
        MorphologyConfig(kernel_sizes=(4, 3, 3))


def test_shipped_classifiers_load_and_are_invariant() -> None:
    for name in ("morphology", "morphology/raw_baseline"):
        art = load_artifact(name)
        assert art.config["training"]["data_description"]["input_kind"] in ("denoised", "raw")
        model = load_model(name)
        x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            assert (model(TRANSFORMS["rot90"](x)) - model(x)).abs().max().item() < 1e-5


def test_shipped_morphology_models_were_trained_under_the_default_noise_law() -> None:
    """`galscale evaluate morphology` and the training commands default to DEFAULT_NOISE: it must
    be the law recorded in the shipped denoiser's and both classifiers' artefacts."""
    from dataclasses import asdict

    from galscale.config import DEFAULT_NOISE

    for name in ("denoiser", "morphology", "morphology/raw_baseline"):
        recorded = load_artifact(name).config["training"]["data_description"]["noise"]
        assert recorded == asdict(DEFAULT_NOISE), name
