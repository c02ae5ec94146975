"""Choosing where models run: CUDA when present (bf16 autocast, channels_last), CPU otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch


def select_device(preference: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else CPU; 'cpu' / 'cuda' force one (clear error if absent)."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} requested but CUDA is not available here")
    if preference not in ("cpu",) and not preference.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {preference!r}")
    return torch.device(preference)


# On CPU the convolutions run fastest on small batches whose activations stay in cache: the
# denoiser does 24.5 items/s at batch 16 and 20.1 at 64, the D16 classifier 437 and 265
# (2-core Zen 3, benchmarks/results/model_bound.json). GPUs want the whole batch.
CPU_MICRO_BATCH = 16


def prepare_for_inference(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move an exported model to `device` in eval mode, in channels_last layout: it is faster on
    CUDA and on CPU too (denoiser 1.6x, D16 classifier 1.7x, multi-band 1.3x on CPU)."""
    return model.to(device).eval().to(memory_format=torch.channels_last)


def micro_batch(batch_size: int, device: torch.device) -> int:
    """Images per forward pass: `batch_size` on GPU, at most `CPU_MICRO_BATCH` on CPU."""
    return batch_size if device.type == "cuda" else max(1, min(batch_size, CPU_MICRO_BATCH))


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """inference_mode, plus bf16 autocast on CUDA (CPU stays fp32: bf16 is slower on most CPUs)."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


def run_batched(model: torch.nn.Module, images: np.ndarray | torch.Tensor, batch_size: int,
                head: Callable[[torch.Tensor], torch.Tensor], what: str) -> np.ndarray:
    """Run `model` on float32 [N, C, H, W] images in batches on the model's device, apply
    `head` to each output, and return the results as one float32 array. Non-finite pixels are
    an error (`what` names the step in the message): callers flag such cutouts first."""
    model.eval()
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim != 4:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"images contain NaN or inf pixels; flag or fill them before {what}")
    device = next(model.parameters()).device
    parts = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(device, memory_format=torch.channels_last)
            parts.append(head(model(batch).float()).contiguous().cpu().numpy())
    if not parts:
        return np.empty((0,), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
