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


def prepare_for_inference(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move an exported model to `device` in eval mode; channels_last on CUDA, where it helps."""
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


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
            parts.append(head(model(x[start : start + batch_size].to(device)).float()).cpu().numpy())
    if not parts:
        return np.empty((0,), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
