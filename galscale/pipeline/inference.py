"""The model stage: exported models loaded once, run on large batches of cutouts.

`SurveyModels` is a plain callable class. Ray Data runs it in an actor pool (one copy of the
models per actor); tests and the plain baseline call it directly. It takes a batch of cutout
columns and returns scalar catalog columns, dropping the pixels.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from galscale.config import REDSHIFT_CLASSES, SurveyJobConfig
from galscale.models.denoiser import denoise_batch
from galscale.models.device import (
    inference_context,
    micro_batch,
    prepare_for_inference,
    select_device,
)
from galscale.models.morphology import disk_probability
from galscale.models.redshift import redshift_probabilities_with_quality
from galscale.registry import load_artifact, load_model
from galscale.survey.flags import Flag

# Columns that carry pixels; the model stage consumes them and does not pass them on.
PIXEL_COLUMNS = ("morph_cutout", "multiband_flux", "multiband_err")
PROBABILITY_COLUMNS = ("p_disk",) + tuple(f"p_{name}" for name in REDSHIFT_CLASSES)

def model_hashes(cfg: SurveyJobConfig) -> dict[str, str]:
    """SHA-256 of each artefact the job will run, for catalog provenance."""
    chosen: dict[str, str] = {}
    if "morphology" in cfg.stages:
        chosen |= {"denoiser": cfg.denoiser, "morphology": cfg.morphology}
    if "redshift" in cfg.stages:
        chosen["redshift"] = cfg.redshift
    return {role: load_artifact(name).sha256 for role, name in chosen.items()}


def _flag(flags: np.ndarray, reasons: np.ndarray, mask: np.ndarray, flag: Flag,
          detail: str) -> None:
    """Set `flag` on masked rows and append its reason in the catalog's `name: detail` form."""
    flags[mask] |= int(flag)
    text = f"{flag.name.lower()}: {detail}"
    for i in np.flatnonzero(mask):
        reasons[i] = f"{reasons[i]}; {text}" if reasons[i] else text


class SurveyModels:
    """Denoiser -> D16 disk classifier, and the multi-band redshift-class CNN, on one device."""

    def __init__(self, cfg: SurveyJobConfig) -> None:
        self.device = select_device(cfg.device)
        self.batch_size = micro_batch(cfg.batch_size, self.device)
        if cfg.model_threads:  # set by run_survey_job (Ray gives an actor num_cpus threads)
            torch.set_num_threads(cfg.model_threads)
        self.run_morphology = "morphology" in cfg.stages
        self.run_redshift = "redshift" in cfg.stages
        if self.run_morphology:
            self.denoiser = prepare_for_inference(load_model(cfg.denoiser), self.device)
            self.morphology = prepare_for_inference(load_model(cfg.morphology), self.device)
        if self.run_redshift:
            self.redshift = prepare_for_inference(load_model(cfg.redshift), self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        n = len(batch["source_id"])
        out = {k: v for k, v in batch.items() if k not in PIXEL_COLUMNS}
        flags = np.asarray(batch["flags"], dtype=np.int64).copy()
        reasons = np.asarray(batch["flag_reason"], dtype=object).copy()
        is_source = np.asarray(batch["source_id"]) >= 0  # tile-status rows carry source_id -1
        for column in PROBABILITY_COLUMNS:
            out[column] = np.full(n, np.nan, dtype=np.float32)

        with inference_context(self.device):
            if self.run_morphology:
                images = np.asarray(batch["morph_cutout"], dtype=np.float32)
                usable = is_source & np.isfinite(images).all(axis=(1, 2, 3))
                usable &= np.asarray(batch["masked_fraction"]) < 1.0
                if usable.any():
                    clean = denoise_batch(self.denoiser, images[usable],
                                          batch_size=self.batch_size)
                    out["p_disk"][usable] = disk_probability(self.morphology, clean,
                                                             batch_size=self.batch_size)
                _flag(flags, reasons, is_source & ~usable, Flag.NO_MORPHOLOGY,
                      "cutout non-finite or fully masked")
            if self.run_redshift:
                flux = np.asarray(batch["multiband_flux"], dtype=np.float32)
                err = np.asarray(batch["multiband_err"], dtype=np.float32)
                if is_source.any():
                    probs, quality = redshift_probabilities_with_quality(
                        self.redshift, flux[is_source], err[is_source], self.batch_size)
                    for k, name in enumerate(REDSHIFT_CLASSES):
                        out[f"p_{name}"][is_source] = probs[:, k]
                    missing = np.zeros(n, dtype=bool)
                    missing[is_source] = quality.missing_bands.any(axis=1)
                    _flag(flags, reasons, missing, Flag.BANDS_ZEROED, "no valid pixels")
        out["flags"] = flags
        out["flag_reason"] = reasons
        out["model_seconds"] = np.full(n, (time.perf_counter() - started) / max(n, 1))
        return out
