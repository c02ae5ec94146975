"""Spectral VAE through the shared Ray Train loop, and the per-batch embedding under Ray Data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galscale.sim.spectra import simulate_spectra
from galscale.spectra.embedding import FittedUmap
from galscale.spectra.io import simulated_batch
from galscale.spectra.mixtures import GaussianMixtureArrays
from galscale.spectra.model import SpectralEmbedder, SpectralEmbeddingModel
from galscale.spectra.preprocess import PreprocessConfig
from galscale.train.spectral import MaskedSpectraDataset, SpectralVAETask


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        # address="local": never join a cluster started by someone else
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _val_mse(model: torch.nn.Module, data: MaskedSpectraDataset) -> float:
    model.eval()
    with torch.no_grad():
        recon, _, _ = model(data.x)
    m = data.mask.float()
    return float(((recon - data.x) ** 2 * m).sum() / m.sum())


def test_spectral_vae_trains_through_the_shared_ray_loop(ray_session, tmp_path):
    from galscale.registry import load_model, save_artifact
    from galscale.train.loop import TrainConfig, seed_everything, train

    task = SpectralVAETask(n_simulated=300, hidden=(64, 32), lr=2e-3, data_seed=5)
    train_set, val_set = task.datasets(0)
    assert len(val_set) == pytest.approx(0.15 * (len(train_set) + len(val_set)), abs=1)
    assert task.datasets(0)[1].x.equal(val_set.x)  # every worker rebuilds the same split
    seed_everything(0)
    untrained = _val_mse(task.build_model(), val_set)
    cfg = TrainConfig(epochs=3, batch_size=32, storage_path=str(tmp_path / "runs"), seed=0,
                      grad_clip_norm=5.0, early_stopping_patience=5, use_gpu="no")
    result = train(task, cfg)
    assert len(result.history) == 3 and result.steps == 3 * int(np.ceil(len(train_set) / 32))
    assert all("val_recon_mse" in h for h in result.history)
    trained = _val_mse(result.model, val_set)
    assert trained < 0.7 * untrained, (trained, untrained)
    art = save_artifact(result.model, tmp_path / "vae", name=task.name,
                        builder="galscale.models.spectral_vae:build_spectral_vae",
                        architecture=task.model_config(), training={})
    again = load_model(art.path)
    assert _val_mse(again, val_set) == pytest.approx(trained, rel=1e-6)


def _hand_made_model(tmp_path) -> str:
    """A tiny but complete embedding model folder (no fitting: arrays chosen by hand)."""
    torch.manual_seed(0)
    from galscale.models.spectral_vae import SpectralVAE

    vae = SpectralVAE(2459, hidden=(32, 16), latent_dim=16).eval()
    rng = np.random.default_rng(0)
    umap = FittedUmap(train_data=rng.normal(size=(200, 16)).astype(np.float32),
                      embedding=rng.normal(size=(200, 2)).astype(np.float32), a=1.58, b=0.9,
                      n_neighbors=10, min_dist=0.0, random_state=0, backend="umap-learn")
    mixture = GaussianMixtureArrays(weights=np.full(3, 1 / 3), means=rng.normal(size=(3, 2)),
                                    covariances=np.stack([np.eye(2)] * 3))
    SpectralEmbeddingModel(vae=vae, preprocess=PreprocessConfig(), umap=umap,
                           mixture=mixture).save(tmp_path / "model")
    return str(tmp_path / "model")


def test_embedding_streams_through_ray_data_actor_pool(ray_session, tmp_path):
    import ray.data

    model_dir = _hand_made_model(tmp_path)
    sim = simulate_spectra(240, seed=9)
    sim.z[5] = np.nan  # one bad row must come out flagged, not vanish
    table = simulated_batch(sim).to_table()
    ds = ray.data.from_arrow(table).map_batches(
        SpectralEmbedder, fn_constructor_kwargs={"model": model_dir}, batch_size=50,
        batch_format="pyarrow", concurrency=1,
    )
    out = ds.to_pandas().sort_values("id").reset_index(drop=True)
    assert len(out) == 240 and out["id"].tolist() == list(range(240))
    direct = SpectralEmbeddingModel.load(model_dir).embed(simulated_batch(sim))
    np.testing.assert_array_equal(out["cluster"].to_numpy(), direct["cluster"])
    np.testing.assert_allclose(out["umap_x"].to_numpy(), direct["umap_x"], rtol=1e-6)
    assert out.loc[5, "cluster"] == -1 and out.loc[5, "flag_reason"] == "bad_redshift"
