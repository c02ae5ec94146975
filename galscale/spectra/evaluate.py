"""Evaluation of the spectral embedding on simulated spectra with known populations.

Measures what issue 6 asks for: adjusted Rand index (ARI) between clusters and true
populations, the median and spread of the reconstruction MSE, the chosen k and its silhouette,
and whether assigning held-out spectra with the persisted (saved, reloaded) models gives the
same clusters as refitting UMAP + mixture on fit + held-out spectra would. Refit clusters are
matched to the persisted ones by the Hungarian assignment on the contingency table of the
spectra both fits share. Agreement is reported over spectra both fits cluster, strictly (a
flag for reconstruction error counts as a label), per population, for confident
(cluster_prob >= 0.9) and border spectra, and, as the baseline instability of refitting
itself, over the fit spectra (original fit vs refit).

ARI is reported (i) over all fit spectra with every flagged spectrum (preprocessing or
reconstruction-error flag) as one group of its own: the headline, no spectrum left out;
(ii) over clustered spectra only; (iii) over clustered spectra without the noisy population.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from galscale.config import SpectralEmbeddingConfig
from galscale.models.spectral_vae import SpectralVAE
from galscale.sim.spectra import POPULATIONS, simulate_spectra
from galscale.spectra.fit import fit_embedding
from galscale.spectra.io import concat_batches, simulated_batch
from galscale.spectra.model import SpectralEmbeddingModel
from galscale.spectra.preprocess import FLAG_HIGH_RECON_ERROR, HARD_FLAGS


def match_labels(reference: np.ndarray, other: np.ndarray) -> dict[int, int]:
    """Map each label of `other` to a label of `reference` (Hungarian on their overlap)."""
    from scipy.optimize import linear_sum_assignment

    ok = (reference >= 0) & (other >= 0)
    ref_k = int(reference[ok].max()) + 1 if ok.any() else 0
    oth_k = int(other[ok].max()) + 1 if ok.any() else 0
    table = np.zeros((oth_k, ref_k))
    np.add.at(table, (other[ok], reference[ok]), 1)
    rows, cols = linear_sum_assignment(-table)
    mapping = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    for label in range(oth_k):  # unmatched refit clusters: their majority reference cluster
        mapping.setdefault(label, int(table[label].argmax()) if table[label].sum() else -2)
    return mapping


def evaluate_spectral(
    vae: SpectralVAE,
    n_fit: int = 3000,
    n_heldout: int = 600,
    seed: int = 100,
    config: SpectralEmbeddingConfig | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fit on `n_fit` simulated spectra, assign `n_heldout` more; return the evaluation figures."""
    from sklearn.metrics import adjusted_rand_score

    cfg = config or SpectralEmbeddingConfig()
    t0 = time.time()
    fit_sim = simulate_spectra(n_fit, seed=seed)
    held_sim = simulate_spectra(n_heldout, seed=seed + 1, first_id=n_fit)
    fit_batch, held_batch = simulated_batch(fit_sim), simulated_batch(held_sim)
    fitted = fit_embedding(fit_batch, vae, cfg)
    cat = fitted.catalog
    usable = cat["cluster"] >= 0
    truth = fit_sim.label
    mse = cat["recon_mse"][usable].astype(np.float64)
    galaxies = usable & (fit_sim.population != "noisy")

    with tempfile.TemporaryDirectory() as tmp:
        folder = work_dir or tmp
        fitted.model.save(folder)
        reloaded = SpectralEmbeddingModel.load(folder)
        held_cols = reloaded.embed(held_batch)
        fit_again = reloaded.embed(fit_batch)
    persisted = held_cols["cluster"]
    held_ok = persisted >= 0

    refit = fit_embedding(concat_batches([fit_batch, held_batch]), vae, cfg)
    refit_fit_part = refit.catalog["cluster"][:n_fit]
    refit_held = refit.catalog["cluster"][n_fit:]
    mapping = match_labels(cat["cluster"], refit_fit_part)

    def mapped_labels(labels: np.ndarray) -> np.ndarray:
        return np.array([mapping.get(int(c), -2) if c >= 0 else -1 for c in labels])

    mapped, mapped_fit = mapped_labels(refit_held), mapped_labels(refit_fit_part)
    both = held_ok & (refit_held >= 0)
    # Strict agreement: every held-out spectrum that preprocessing could normalise, with
    # "flagged for reconstruction error" (-1) counted as a label of its own.
    encoded_held = (held_cols["flags"] & HARD_FLAGS) == 0
    held_pop = held_sim.population
    agree = persisted == mapped
    recon_flagged = (cat["flags"] & FLAG_HIGH_RECON_ERROR) != 0
    clustered_or_recon = usable | recon_flagged  # everything preprocessing could normalise
    groups = np.where(usable, cat["cluster"], -1)  # flagged spectra form one group
    per_pop = {
        POPULATIONS[k]: {
            "n": int((truth == k).sum()),
            "n_flagged": int(((truth == k) & ~usable).sum()),
            "majority_cluster_fraction": float(
                np.bincount(cat["cluster"][(truth == k) & usable]).max()
                / max(1, ((truth == k) & usable).sum())
            ) if ((truth == k) & usable).any() else None,
        }
        for k in range(len(POPULATIONS))
    }
    return {
        "n_fit": n_fit, "n_heldout": n_heldout, "seed": seed, "config": asdict(cfg),
        "n_fit_usable": int(usable.sum()),
        "flagged_fraction": float(1 - usable.mean()),
        "ari_all_spectra_flagged_as_one_group": float(adjusted_rand_score(truth, groups)),
        "ari_normalisable_spectra_recon_flagged_as_one_group": float(adjusted_rand_score(
            truth[clustered_or_recon], groups[clustered_or_recon])),
        "ari_clusters_vs_populations": float(adjusted_rand_score(truth[usable], cat["cluster"][usable])),
        "ari_clusters_vs_populations_without_noisy": float(adjusted_rand_score(
            truth[galaxies], cat["cluster"][galaxies])),
        "n_high_recon_error_flagged": int(recon_flagged.sum()),
        "high_recon_error_flagged_by_population": {
            p: int((recon_flagged & (fit_sim.population == p)).sum()) for p in POPULATIONS},
        "recon_mse_max": float(fitted.model.recon_mse_max),
        "ari_heldout_persisted_vs_populations": float(
            adjusted_rand_score(held_sim.label[held_ok], persisted[held_ok])),
        "recon_mse_median_all_normalisable": float(np.median(cat["recon_mse"][clustered_or_recon])),
        "recon_mse_std_all_normalisable": float(np.std(cat["recon_mse"][clustered_or_recon])),
        "recon_mse_iqr_all_normalisable": [float(q) for q in np.percentile(
            cat["recon_mse"][clustered_or_recon], [25, 75])],
        "recon_mse_median": float(np.median(mse)),
        "recon_mse_std": float(np.std(mse)),
        "recon_mse_median_without_noisy": float(np.median(cat["recon_mse"][galaxies])),
        "recon_mse_std_without_noisy": float(np.std(cat["recon_mse"][galaxies])),
        "k": int(fitted.selection.k),
        "silhouette": float(fitted.selection.silhouette),
        "best_silhouette_per_k": fitted.selection.summary()["best_silhouette_per_k"],
        "reload_reproduces_fit_clusters": float(
            np.mean(fit_again["cluster"][usable] == cat["cluster"][usable])),
        "heldout_persisted_vs_refit_agreement": float(np.mean(agree[both])),
        "heldout_persisted_vs_refit_agreement_strict": float(np.mean(agree[encoded_held])),
        "heldout_agreement_by_population": {
            p: float(np.mean(agree[both & (held_pop == p)])) if (both & (held_pop == p)).any()
            else None for p in POPULATIONS},
        "heldout_agreement_cluster_prob_ge_0_9": float(np.mean(
            agree[both & (held_cols["cluster_prob"] >= 0.9)])),
        "heldout_agreement_cluster_prob_lt_0_9": (float(np.mean(
            agree[both & (held_cols["cluster_prob"] < 0.9)]))
            if (both & (held_cols["cluster_prob"] < 0.9)).any() else None),
        "fit_spectra_original_vs_refit_agreement": float(np.mean(
            (cat["cluster"] == mapped_fit)[usable & (refit_fit_part >= 0)])),
        "refit_k": int(refit.selection.k),
        "per_population": per_pop,
        "paper_reference": {"recon_mse_median": 0.122, "recon_mse_std": 0.124, "k": 12,
                            "silhouette": 0.44},
        "seconds": time.time() - t0,
    }


__all__ = ["match_labels", "evaluate_spectral"]
