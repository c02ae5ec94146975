"""Inference placement: channels_last and CPU micro-batches change speed, never results."""

from __future__ import annotations

import numpy as np
import torch

from galscale.config import SurveyJobConfig
from galscale.models.denoiser import denoise_batch
from galscale.models.device import CPU_MICRO_BATCH, micro_batch, prepare_for_inference
from galscale.models.morphology import disk_probability
from galscale.pipeline.job import model_threads
from galscale.registry import load_model


def test_micro_batch_caps_cpu_batches_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert micro_batch(256, cpu) == CPU_MICRO_BATCH
    assert micro_batch(4, cpu) == 4
    assert micro_batch(256, cuda) == 256


def test_channels_last_and_micro_batches_give_the_same_outputs() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((20, 3, 256, 256), dtype=np.float32) * 0.3
    cpu = torch.device("cpu")
    plain_den, plain_cls = load_model("denoiser").export().eval(), load_model("morphology").eval()
    fast_den = prepare_for_inference(load_model("denoiser").export(), cpu)
    fast_cls = prepare_for_inference(load_model("morphology"), cpu)
    assert next(p for p in fast_den.parameters() if p.ndim == 4).is_contiguous(
        memory_format=torch.channels_last)

    clean_plain = denoise_batch(plain_den, images, batch_size=20)
    clean_fast = denoise_batch(fast_den, images, batch_size=micro_batch(64, cpu))
    assert clean_fast.flags["C_CONTIGUOUS"] and clean_fast.shape == images.shape
    np.testing.assert_allclose(clean_fast, clean_plain, atol=1e-5)
    np.testing.assert_allclose(disk_probability(fast_cls, clean_plain, batch_size=16),
                               disk_probability(plain_cls, clean_plain, batch_size=20), atol=1e-5)


def test_explicit_model_threads_win() -> None:
    assert model_threads(SurveyJobConfig("s", "o", model_threads=3)) == 3
    assert model_threads(SurveyJobConfig("s", "o", num_model_actors=4,
                                         cpus_per_model_actor=2.0)) == 2
