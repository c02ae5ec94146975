"""U-Net VAE denoiser: shapes, loss, registry round trip, data, and the shipped weights' PSNR gain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from galscale.evaluate.morphology import HELDOUT_CONTAMINATION_SEED, psnr, ssim
from galscale.images import ImageLoadError, folder_labels, list_images, load_image, load_images
from galscale.models.denoiser import (
    DenoiserConfig,
    UNetVAE,
    architecture_dict,
    count_flops,
    denoise_batch,
    denoiser_loss,
)
from galscale.registry import load_artifact, load_model, save_artifact
from galscale.train.denoiser import (
    BUILDER,
    ContaminatedPairs,
    add_arguments,
    contaminate,
    load_clean_galaxies,
)


def test_shapes_range_and_mean_path() -> None:
    torch.manual_seed(0)
    model = UNetVAE()
    x = torch.rand(2, 3, 256, 256)
    recon, mu, logvar = model(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 32, 16, 16)
    assert 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0
    model.eval()
    exported = model.export()
    with torch.no_grad():
        a, b = exported(x), exported(x)
        recon_eval, _, _ = model(x)
    assert torch.equal(a, b)  # no sampling at inference
    assert torch.allclose(a, recon_eval)
    with pytest.raises(ValueError, match="3, H, W"):
        model(torch.rand(1, 1, 256, 256))
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 3, 250, 250))
    with pytest.raises(ValueError, match="NaN"):
        denoise_batch(exported, np.full((1, 3, 64, 64), np.nan, np.float32))


def test_flops_budget() -> None:
    flops = count_flops(UNetVAE().export())
    assert 0.5e9 < flops <= 1.5e9


def test_loss_decreases_on_tiny_batch() -> None:
    torch.manual_seed(0)
    model = UNetVAE()
    target = torch.zeros(4, 3, 64, 64)
    target[:, :, 24:40, 24:40] = 0.8
    noisy = (target + 0.2 * torch.rand_like(target)).clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        recon, mu, logvar = model(noisy)
        loss, metrics = denoiser_loss(recon, target, mu, logvar, recon_loss="mse", beta=1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["mse"])
    assert losses[-1] < 0.8 * losses[0]  # starts as the identity (residual), then learns
    with pytest.raises(ValueError):
        DenoiserConfig(recon_loss="l1")


def test_registry_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    model = UNetVAE(DenoiserConfig(widths=(4, 8), latent_channels=2)).eval()
    art = save_artifact(model, tmp_path / "den", name="denoiser", builder=BUILDER,
                        architecture=architecture_dict(model.config), training={"test": True})
    loaded = load_model(tmp_path / "den")
    x = torch.rand(2, 3, 32, 32)
    np.testing.assert_array_equal(denoise_batch(loaded, x), denoise_batch(model, x))
    assert load_artifact(tmp_path / "den").sha256 == art.sha256


def test_image_loading(tmp_path) -> None:
    from astropy.io import fits

    rgb = (np.arange(300 * 400 * 3) % 251).reshape(300, 400, 3).astype(np.uint8)
    (tmp_path / "spirals").mkdir()
    (tmp_path / "non_spirals").mkdir()
    Image.fromarray(rgb).save(tmp_path / "spirals" / "a.png")
    fits.writeto(tmp_path / "non_spirals" / "b.fits", np.random.default_rng(0).random((100, 120)))
    (tmp_path / "non_spirals" / "broken.jpg").write_bytes(b"not a jpeg")
    paths = list_images(tmp_path)
    assert [p.name for p in paths] == ["b.fits", "broken.jpg", "a.png"]
    cut = load_image(tmp_path / "spirals" / "a.png")
    assert cut.shape == (3, 256, 256) and cut.dtype == np.float32
    assert 0.0 <= cut.min() and cut.max() <= 1.0
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_images(paths)
    loaded = load_images(paths, on_error="skip")
    assert len(loaded.paths) == 2 and loaded.skipped[0][0].endswith("broken.jpg")
    assert folder_labels(loaded.paths).tolist() == [0, 1]


def test_images_option_becomes_absolute(tmp_path, monkeypatch) -> None:
    """Ray Train workers run in their trial folder, so `--images ../x` must be resolved by the
    parser, on the driver; a folder that does not exist is a usage error."""
    import argparse

    (tmp_path / "pictures").mkdir()
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--images", "./pictures"])
    assert args.images == str((tmp_path / "pictures").resolve())
    with pytest.raises(SystemExit):
        parser.parse_args(["--images", "missing"])


def test_contaminated_pairs_are_deterministic() -> None:
    galaxies = load_clean_galaxies(None, n_sim=2, sim_seed=3, split="train")
    pairs = ContaminatedPairs(galaxies, realisations=3, seed=7)
    assert len(pairs) == 6
    a, clean_a = pairs[4]
    b, _ = pairs[4]
    c, clean_c = pairs[5]
    assert torch.equal(a, b) and torch.equal(clean_a, clean_c)
    assert not torch.equal(a, c)  # another realisation of the same galaxy
    assert float((a - clean_a).abs().mean()) > 1e-3  # contaminants and noise were added


@pytest.fixture(scope="module")
def heldout_batch() -> tuple[np.ndarray, np.ndarray]:
    galaxies = load_clean_galaxies(None, n_sim=6, sim_seed=1, split="heldout")
    clean = galaxies.images.astype(np.float32) / 255.0
    noisy = np.stack([contaminate(clean[i], HELDOUT_CONTAMINATION_SEED, i, 0)
                      for i in range(len(clean))])
    return noisy, clean


def test_shipped_denoiser_improves_heldout_psnr(heldout_batch) -> None:
    noisy, clean = heldout_batch
    model = load_model("denoiser")
    denoised = denoise_batch(model, noisy)
    gain = psnr(denoised, clean) - psnr(noisy, clean)
    assert gain.mean() > 1.0, gain
    assert ssim(denoised, clean).mean() > ssim(noisy, clean).mean()
    untrained = denoise_batch(UNetVAE().eval(), noisy)  # the check is not a constant
    assert psnr(untrained, clean).mean() < psnr(denoised, clean).mean()
