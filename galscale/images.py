"""Load folders of galaxy pictures (JPEG, PNG, FITS) as 3-channel 256x256 cutouts in [0, 1].

The morphology models take `float32 [3, 256, 256]` in [0, 1] (channels R, G, B). A picture is
centre-cropped to a square (optionally to `crop_fraction` of its side, to zoom on the central
galaxy), resized to 256x256 with area averaging, and scaled to [0, 1]: 8-bit images by 1/255,
FITS by a min-max stretch between the 0.5 and 99.9 percentiles of the finite pixels. A 2-D FITS
image fills all three channels; a 3-D FITS cube must have 3 planes. Labels can be read from folder
names (e.g. Galaxy Zoo 2 `spirals/` vs `non_spirals/`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galscale.config import MORPH_CUTOUT

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".fits", ".fits.gz", ".fit")


class ImageLoadError(ValueError):
    """A picture could not be read or converted; the message names the file and the reason."""


@dataclass
class ImageSet:
    """Loaded cutouts (uint8 [N, 3, size, size], to keep 1,400 images in ~275 MB) and provenance."""

    images: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def as_float(self, index: int | slice | np.ndarray) -> np.ndarray:
        """float32 cutouts in [0, 1] for the given rows."""
        return self.images[index].astype(np.float32) / 255.0


def absolute_folder(path: str) -> str:
    """argparse type for image folders: the folder as an absolute path, since Ray Train runs
    each worker in its own trial folder, where a relative path would not resolve."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"image folder {path} does not exist")
    return str(folder.resolve())


def list_images(folder: str | Path) -> list[Path]:
    """All picture files under `folder` (recursive), sorted for reproducibility."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
    )


def _read_pixels(path: Path) -> np.ndarray:
    """float32 [C, H, W] in [0, 1] with C in {1, 3}."""
    name = path.name.lower()
    if name.endswith((".fits", ".fits.gz", ".fit")):
        from astropy.io import fits

        with fits.open(path) as hdul:
            data = next((h.data for h in hdul if h.data is not None and h.data.ndim >= 2), None)
            if data is None:
                raise ImageLoadError(f"{path}: no 2-D image or 3-plane cube in any HDU")
            data = np.asarray(data, dtype=np.float32)
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3 or data.shape[0] not in (1, 3):
            raise ImageLoadError(f"{path}: FITS data of shape {data.shape}; need [H, W] or [3, H, W]")
        return stretch_to_unit(data, path)
    from PIL import Image

    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return rgb.transpose(2, 0, 1)


def stretch_to_unit(data: np.ndarray, source: object = "array") -> np.ndarray:
    """Min-max stretch between the 0.5 and 99.9 percentiles of finite pixels; NaN -> 0."""
    finite = np.isfinite(data)
    if not finite.any():
        raise ImageLoadError(f"{source}: no finite pixels")
    lo, hi = np.percentile(data[finite], [0.5, 99.9])
    if not hi > lo:
        raise ImageLoadError(f"{source}: constant image (no dynamic range)")
    out = np.clip((np.where(finite, data, lo) - lo) / (hi - lo), 0.0, 1.0)
    return out.astype(np.float32)


def to_cutout(pixels: np.ndarray, size: int = MORPH_CUTOUT, crop_fraction: float = 1.0) -> np.ndarray:
    """[C, H, W] in [0, 1] -> float32 [3, size, size]: centre square crop, area resize."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    c, h, w = pixels.shape
    side = max(1, int(round(min(h, w) * crop_fraction)))
    top, left = (h - side) // 2, (w - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(pixels[:, top : top + side, left : left + side]))
    if side != size:
        mode = "area" if side > size else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        square = F.interpolate(square[None], size=(size, size), mode=mode, **kwargs)[0]
    if c == 1:
        square = square.expand(3, size, size)
    return square.clamp(0.0, 1.0).numpy().astype(np.float32)


def load_image(path: str | Path, size: int = MORPH_CUTOUT, crop_fraction: float = 1.0) -> np.ndarray:
    """One picture as float32 [3, size, size] in [0, 1]; raises `ImageLoadError` with the reason."""
    path = Path(path)
    try:
        pixels = _read_pixels(path)
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL / astropy raise many types for corrupt files
        raise ImageLoadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return to_cutout(pixels, size, crop_fraction)


def load_images(
    paths: list[Path] | list[str],
    *,
    size: int = MORPH_CUTOUT,
    crop_fraction: float = 1.0,
    on_error: str = "raise",
) -> ImageSet:
    """Load pictures into an `ImageSet`; `on_error="skip"` records unreadable files in `.skipped`."""
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    for path in paths:
        try:
            cutout = load_image(path, size, crop_fraction)
        except ImageLoadError as exc:
            if on_error == "raise":
                raise
            skipped.append((str(path), str(exc)))
            continue
        images[len(kept)] = np.round(cutout * 255.0).astype(np.uint8)
        kept.append(str(path))
    return ImageSet(images=images[: len(kept)], paths=kept, skipped=skipped)


def folder_labels(
    paths: list[str] | list[Path],
    positive: tuple[str, ...] = ("spirals", "spiral", "disk", "disks"),
    negative: tuple[str, ...] = ("non_spirals", "non_spiral", "non_disk", "non_disks"),
) -> np.ndarray:
    """int64 labels from each file's parent folder name: 1 positive, 0 negative, -1 unknown."""
    labels = np.full(len(paths), -1, dtype=np.int64)
    for i, path in enumerate(paths):
        parent = Path(path).parent.name.lower()
        if parent in positive:
            labels[i] = 1
        elif parent in negative:
            labels[i] = 0
    return labels


def holdout_mask(paths: list[str] | list[Path], fraction: float = 0.2) -> np.ndarray:
    """Deterministic held-out split by a hash of each file name (independent of order or machine)."""
    import zlib

    return np.array(
        [zlib.crc32(Path(p).name.encode()) % 1000 < fraction * 1000 for p in paths], dtype=bool
    )


__all__ = [
    "IMAGE_SUFFIXES", "ImageLoadError", "ImageSet", "absolute_folder", "list_images", "stretch_to_unit",
    "to_cutout", "load_image", "load_images", "folder_labels", "holdout_mask",
]
