"""Fit the spectral embedding on a table of spectra: encode, UMAP, mixtures (no Ray).

`fit_embedding` is the library form of `galscale embed-spectra`: it preprocesses every
spectrum, encodes the usable ones with a trained VAE, fits UMAP on a sample (transforming the
rest with the same pickle-free transform used later for assignment), flags spectra whose reconstruction error is far above the fit set's
(`recon_error_threshold`: noise/artifact dominated; they keep a map position but get no
cluster and are left out of the UMAP and mixture fits), selects the Gaussian mixture by
silhouette, and returns the persisted-ready `SpectralEmbeddingModel` with the
catalog columns of every input row (flagged rows included, cluster -1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from galscale.config import SpectralEmbeddingConfig
from galscale.models.spectral_vae import SpectralVAE
from galscale.spectra.embedding import encode_spectra, fit_umap_on_sample, make_umap
from galscale.spectra.io import SpectraBatch
from galscale.spectra.mixtures import MixtureSelection, select_mixture
from galscale.spectra.model import SpectralEmbeddingModel, catalog_columns
from galscale.spectra.preprocess import (
    FLAG_HIGH_RECON_ERROR,
    PreprocessConfig,
    PreprocessedSpectra,
    preprocess_spectra,
)


@dataclass
class EmbeddingFit:
    """A fitted embedding, the catalog of the spectra it was fitted on, and the VAE inputs."""

    model: SpectralEmbeddingModel
    catalog: dict[str, np.ndarray]
    selection: MixtureSelection
    preprocessed: PreprocessedSpectra


def recon_error_threshold(recon_mse: np.ndarray, nsigma: float) -> float:
    """Reconstruction-MSE threshold: median + nsigma robust sigmas (1.4826 MAD) in log10(MSE).

    Robust statistics, so that a minority of noise/artifact spectra does not move the threshold
    that flags them. `nsigma <= 0` disables flagging (returns inf).
    """
    mse = np.asarray(recon_mse, np.float64)
    mse = mse[np.isfinite(mse) & (mse > 0)]
    if nsigma <= 0 or mse.size == 0:
        return float("inf")
    log_mse = np.log10(mse)
    med = float(np.median(log_mse))
    sigma = 1.4826 * float(np.median(np.abs(log_mse - med)))
    return float(10.0 ** (med + nsigma * sigma))


def fit_embedding(
    spectra: SpectraBatch,
    vae: SpectralVAE,
    config: SpectralEmbeddingConfig | None = None,
    preprocess: PreprocessConfig | None = None,
) -> EmbeddingFit:
    """Fit UMAP + mixture on the VAE latents of `spectra`; every input row gets a catalog row."""
    cfg = config or SpectralEmbeddingConfig()
    pre_cfg = preprocess or PreprocessConfig()
    pre = preprocess_spectra(spectra.wave, spectra.flux, spectra.err, spectra.z, pre_cfg)
    latent, mse = encode_spectra(vae, pre.x, pre.mask)
    encoded = np.isfinite(latent).all(axis=1)
    recon_mse_max = recon_error_threshold(mse[encoded], cfg.recon_flag_nsigma)
    high = encoded & (mse > recon_mse_max)
    usable = np.flatnonzero(encoded & ~high)
    if usable.size <= max(cfg.umap_neighbors, cfg.k_max):
        raise ValueError(
            f"only {usable.size} of {len(spectra)} spectra are usable (the rest are flagged); "
            f"need more than {max(cfg.umap_neighbors, cfg.k_max)} to fit the embedding"
        )
    fitter = make_umap(n_neighbors=cfg.umap_neighbors, min_dist=cfg.umap_min_dist,
                       random_state=cfg.seed, backend=cfg.umap_backend)
    fitted, sample_rows = fit_umap_on_sample(latent[usable], fitter, cfg.umap_sample, cfg.seed)
    xy = np.full((latent.shape[0], 2), np.nan, dtype=np.float32)
    in_sample = np.zeros(usable.size, dtype=bool)
    in_sample[sample_rows] = True
    xy[usable[in_sample]] = fitted.embedding
    rest = np.concatenate([usable[~in_sample], np.flatnonzero(high)])  # high: map position only
    for start in range(0, rest.size, 50_000):
        chunk = rest[start : start + 50_000]
        xy[chunk] = fitted.transform(latent[chunk])
    selection = select_mixture(
        xy[usable], k_range=(cfg.k_min, cfg.k_max), n_restarts=cfg.gmm_restarts,
        seed=cfg.seed, silhouette_sample=cfg.silhouette_sample,
    )
    cluster, prob = selection.mixture.predict(xy)
    cluster[high], prob[high] = -1, np.nan
    info = {"embedding_config": asdict(cfg), "silhouette": selection.silhouette,
            "n_spectra": len(spectra), "n_usable": int(usable.size),
            "n_high_recon_error": int(high.sum()),
            "best_silhouette_per_k": selection.summary()["best_silhouette_per_k"]}
    model = SpectralEmbeddingModel(vae=vae, preprocess=pre_cfg, umap=fitted,
                                   mixture=selection.mixture, info=info,
                                   recon_mse_max=recon_mse_max)
    cols = catalog_columns(spectra.ids, spectra.z, pre, latent, mse, xy, cluster, prob,
                           np.where(high, FLAG_HIGH_RECON_ERROR, 0))
    return EmbeddingFit(model=model, catalog=cols, selection=selection, preprocessed=pre)


__all__ = ["EmbeddingFit", "recon_error_threshold", "fit_embedding"]
