"""Multi-band redshift-class CNN (seed 002): low-z galaxy / high-z dropout / brown dwarf.

The network separates spectral and spatial processing, as in Roberts & Conselice:

- a squeeze-and-excitation `ChannelAttention` on the seven input bands re-weights the bands;
- a 1x1 stem and `SpectralResidualBlock`s (1x1 convolutions across bands, batch norm, dropout)
  learn colours pixel by pixel, refined by a second channel attention;
- `SpatialResidualBlock`s (3x3 convolutions, spatial dropout, stride-2 down-sampling) after a
  max-pool learn shape (point-like brown dwarfs versus extended galaxies);
- global average + max pooling and two dense layers give three logits.

Weights are He-normal initialised; training uses Adam at 5e-4 and (class-weighted) cross-entropy
(see `galscale.train.redshift`).

`preprocess_multiband` is the one per-cutout preprocessing, used identically by training,
evaluation and the survey pipeline: invalid pixels and missing bands are zeroed, the central
source is segmented on the S/N detection stack, everything else is masked out, and the fluxes
are divided by the source's mean flux per pixel summed over bands (so colours are kept) and
compressed with asinh. Seven *significance planes* follow the seven flux planes: each band's
footprint S/N (asinh-compressed, constant over the footprint). Flux normalisation hides how
well a band is measured, and "not detected in F090W" is the Lyman-break signature only when
F090W is deep enough to have seen the source; a gradient-boosted classifier given these S/N
values beat the flux-only CNN (docs/redshift.md). Rotations by 90 degrees and flips commute
exactly with the preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from galscale.config import MULTIBAND_CUTOUT, NIRCAM_BANDS, REDSHIFT_CLASSES

# Class priors. A model trained with inverse-frequency class weights outputs probabilities for
# balanced classes; in a survey brown dwarfs are rare (the paper: 11 of 1,455 selected sources,
# 0.8 %) and high-z dropouts a minority, so `redshift_probabilities` re-weights the output to
# the survey's priors by default. SURVEY_CLASS_PRIORS are the simulated "realistic" fractions
# that the held-out evaluation also uses.
BALANCED_CLASS_PRIORS: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
SURVEY_CLASS_PRIORS: tuple[float, float, float] = (0.79, 0.20, 0.01)


def check_class_priors(priors: object, n_classes: int = len(REDSHIFT_CLASSES)) -> tuple[float, ...]:
    """Validated priors as a tuple normalised to sum 1 (clear error for wrong length / values)."""
    p = np.asarray(priors, dtype=np.float64).ravel()
    if p.shape != (n_classes,) or not np.isfinite(p).all() or (p <= 0).any():
        raise ValueError(f"class priors must be {n_classes} positive finite numbers in "
                         f"{REDSHIFT_CLASSES} order, got {priors!r}")
    return tuple(float(v) for v in p / p.sum())


def shift_class_priors(probs: np.ndarray, training_priors: object,
                       target_priors: object) -> np.ndarray:
    """Bayes prior shift: p_k proportional to p_k * target_k / training_k, renormalised per row.

    The network estimates p(x | k) * training_k; exchanging the prior gives the posterior for a
    population with `target_priors` (Saerens et al. 2002). float32 [N, K] in and out."""
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    ratio = np.asarray(check_class_priors(target_priors, k)) / np.asarray(
        check_class_priors(training_priors, k))
    w = probs * ratio
    return (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global-average-pool each channel, an MLP gives a 0..1 weight per
    channel, the input is re-weighted. On the input bands this is a learned per-cutout band weight."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample channel weights, shape [N, C]."""
        s = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)[:, :, None, None]


class SpectralResidualBlock(nn.Module):
    """Two 1x1 convolutions (mixing bands / spectral features per pixel) with batch norm and
    dropout, plus an identity skip."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class SpatialResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and spatial dropout (whole feature maps), optional
    stride-2 down-sampling; the skip is a strided 1x1 projection when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, spatial_dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout2d(spatial_dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip: nn.Module
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.skip(x) + self.body(x))


class RedshiftClassifier(nn.Module):
    """7-band 64x64 cutout (preprocessed by `preprocess_multiband` into 7 flux and 7 significance
    planes, `input_channels(in_bands)`) -> 3 class logits."""

    def __init__(
        self,
        in_bands: int = len(NIRCAM_BANDS),
        n_classes: int = len(REDSHIFT_CLASSES),
        spectral_channels: int = 16,
        spectral_blocks: int = 2,
        spatial_channels: tuple[int, ...] = (32, 64, 64),
        spatial_strides: tuple[int, ...] = (2, 2, 1),
        dense: int = 64,
        dropout: float = 0.2,
        spatial_dropout: float = 0.1,
        training_class_priors: tuple[float, ...] = BALANCED_CLASS_PRIORS,
        survey_class_priors: tuple[float, ...] = SURVEY_CLASS_PRIORS,
    ) -> None:
        super().__init__()
        if len(spatial_channels) != len(spatial_strides):
            raise ValueError("spatial_channels and spatial_strides must have the same length")
        # class priors the softmax output reflects (balanced: class-weighted training) and the
        # survey's, for the Bayes prior shift in `redshift_probabilities`; kept in the config
        self.training_class_priors = check_class_priors(training_class_priors, n_classes)
        self.survey_class_priors = check_class_priors(survey_class_priors, n_classes)
        channels = input_channels(in_bands)
        self.band_attention = ChannelAttention(channels, max(4, channels))
        self.stem = nn.Sequential(
            nn.Conv2d(channels, spectral_channels, 1, bias=False),
            nn.BatchNorm2d(spectral_channels),
            nn.ReLU(inplace=True),
        )
        self.spectral = nn.Sequential(
            *[SpectralResidualBlock(spectral_channels, dropout) for _ in range(spectral_blocks)]
        )
        self.spectral_attention = ChannelAttention(spectral_channels, max(4, spectral_channels // 4))
        self.pool = nn.MaxPool2d(2)
        blocks: list[nn.Module] = []
        c = spectral_channels
        for c_out, stride in zip(spatial_channels, spatial_strides, strict=True):
            blocks.append(SpatialResidualBlock(c, c_out, stride, spatial_dropout))
            c = c_out
        self.spatial = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Linear(2 * c, dense),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dense, n_classes),
        )
        he_normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.band_attention(x)
        x = self.spectral_attention(self.spectral(self.stem(x)))
        x = self.spatial(self.pool(x))
        x = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.head(x)


def input_channels(n_bands: int) -> int:
    """Network input channels for `n_bands` bands: a flux plane and a significance plane each."""
    return 2 * n_bands


def he_normal_init(model: nn.Module) -> None:
    """He-normal (Kaiming, fan-in, ReLU gain) weights for every conv and linear layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_redshift_classifier(**architecture: object) -> RedshiftClassifier:
    """Registry builder (`galscale.models.redshift:build_redshift_classifier`); JSON lists are
    accepted for the tuple arguments."""
    arch = dict(architecture)
    for key in ("spatial_channels", "spatial_strides", "training_class_priors",
                "survey_class_priors"):
        if key in arch:
            cast = float if key.endswith("priors") else int
            arch[key] = tuple(cast(v) for v in arch[key])  # type: ignore[union-attr]
    return RedshiftClassifier(**arch)  # type: ignore[arg-type]


def classifier_flops(model: nn.Module, size: int = MULTIBAND_CUTOUT) -> int:
    """Forward FLOPs for one cutout, counted by torch.utils.flop_counter (eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    channels = model.band_attention.fc1.in_features  # type: ignore[union-attr]
    x = torch.zeros(1, channels, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------
# preprocessing (identical in training and inference)
# ---------------------------------------------------------------------------------------------

# Missing-band rule: a band is missing in a cutout when fewer than this fraction of its pixels
# have a finite flux and a finite, positive error.
MIN_VALID_FRACTION = 0.5


@dataclass(frozen=True)
class SegmentationConfig:
    """Central-source segmentation on the S/N detection stack."""

    threshold_sigma: float = 2.0  # detection threshold in robust sigma of the smoothed stack
    smooth_sigma_px: float = 1.0  # Gaussian smoothing of the stack before thresholding
    search_radius_px: float = 6.0  # nearest component to the centre accepted within this radius
    fallback_radius_px: float = 4.0  # circular aperture when nothing is detected near the centre
    dilate_px: int = 2  # grow the footprint to keep the wings
    asinh_softening: float = 1.0  # x -> asinh(x / s) after normalising to unit mean source pixel
    snr_softening: float = 3.0  # significance plane = asinh(footprint S/N / s): ~linear below 3


@dataclass(frozen=True)
class MultibandQuality:
    """Per-cutout quality of the preprocessing, for catalog flags."""

    missing_bands: np.ndarray  # bool [N, 7]: band zeroed (no valid data)
    no_central_source: np.ndarray  # bool [N]: nothing detected near the centre; aperture used
    nonpositive_flux: np.ndarray  # bool [N]: footprint flux <= 0; normalised by |flux| instead


def _as_batch(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flux = np.asarray(flux, dtype=np.float32)
    err = np.asarray(err, dtype=np.float32)
    if flux.ndim == 3:
        flux, err = flux[None], err[None]
    if flux.ndim != 4 or flux.shape != err.shape:
        raise ValueError(
            f"flux and err must both be [N, bands, H, W] (or [bands, H, W]); got {flux.shape} and {err.shape}"
        )
    if flux.shape[2] != flux.shape[3] or flux.shape[2] % 2:
        raise ValueError(f"cutouts must be square with an even size; got {flux.shape[2:]}")
    return flux, err


def valid_pixels(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid pixel mask [N,B,H,W], missing band mask [N,B]) of a batch."""
    flux, err = _as_batch(flux, err)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    missing = ok.mean(axis=(2, 3)) < MIN_VALID_FRACTION
    ok &= ~missing[:, :, None, None]
    return ok, missing


def _central_footprint(det: np.ndarray, cfg: SegmentationConfig) -> tuple[np.ndarray, bool]:
    """Footprint (bool [H, W]) of the source at the centre of one detection image, and whether
    one was found. Invariant under 90-degree rotations and flips of the image."""
    size = det.shape[0]
    sm = ndimage.gaussian_filter(det, cfg.smooth_sigma_px, mode="constant")
    noise = 1.4826 * np.median(np.abs(sm - np.median(sm)))
    if not np.isfinite(noise) or noise <= 0:
        noise = float(np.std(sm)) or 1.0
    labels, n = ndimage.label(sm > cfg.threshold_sigma * noise, structure=np.ones((3, 3)))
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    r2 = (yy - c) ** 2 + (xx - c) ** 2
    found = False
    mask = np.zeros((size, size), dtype=bool)
    if n:
        centre = labels[size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1]
        ids = np.unique(centre[centre > 0])
        if ids.size == 0:
            # nearest component within the search radius (distance to the image centre)
            ids_all = np.arange(1, n + 1)
            dmin = ndimage.minimum(r2, labels, ids_all)
            near = ids_all[np.asarray(dmin) <= cfg.search_radius_px**2]
            if near.size:
                ids = near[[int(np.argmin(np.asarray(dmin)[near - 1]))]]
        if ids.size:
            # among candidates the brightest in the smoothed stack (rotation-invariant choice)
            sums = np.asarray(ndimage.sum(sm, labels, ids))
            mask = labels == ids[int(np.argmax(sums))]
            found = True
    if not found:
        mask = r2 <= cfg.fallback_radius_px**2
    if cfg.dilate_px > 0:
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=cfg.dilate_px)
    return mask, found


def central_footprints(
    flux: np.ndarray, err: np.ndarray, config: SegmentationConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segment the central source of every cutout on the S/N detection stack of its available
    bands. Returns (clean flux float32 [N,B,H,W] with invalid pixels and missing bands zeroed,
    footprints bool [N,H,W], found bool [N], missing bands bool [N,B])."""
    cfg = config or SegmentationConfig()
    flux, err = _as_batch(flux, err)
    ok, missing = valid_pixels(flux, err)
    f = np.where(ok, flux, 0.0).astype(np.float32)
    snr = np.where(ok, f / np.where(ok, err, 1.0), 0.0)
    n_avail = np.maximum((~missing).sum(axis=1), 1).astype(np.float32)
    det = snr.sum(axis=1) / np.sqrt(n_avail)[:, None, None]
    masks = np.zeros((len(f),) + f.shape[2:], dtype=bool)
    found = np.zeros(len(f), dtype=bool)
    for i in range(len(f)):
        masks[i], found[i] = _central_footprint(det[i], cfg)
    return f, masks, found, missing


def footprint_photometry(
    f: np.ndarray, masks: np.ndarray, err: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(flux, 1-sigma error), float64 [N, B], summed over each cutout's footprint, from the clean
    flux and footprints of `central_footprints` and the raw error cubes (invalid errors count 0)."""
    e = np.where(np.isfinite(err) & (np.asarray(err) > 0), err, 0.0).astype(np.float64)
    if e.ndim == 3:
        e = e[None]
    m = masks[:, None].astype(np.float64)
    flux = (f * m).sum(axis=(2, 3), dtype=np.float64)
    flux_err = np.sqrt(((e * m) ** 2).sum(axis=(2, 3)))
    return flux, flux_err


def preprocess_multiband_with_quality(
    flux: np.ndarray, err: np.ndarray, config: SegmentationConfig | None = None
) -> tuple[torch.Tensor, MultibandQuality]:
    """Preprocess raw cutouts (float32 [N,B,H,W] flux and 1-sigma err, any linear unit) into the
    network input (float32 tensor [N,2B,H,W]) plus quality flags.

    Steps per cutout: zero invalid pixels and missing bands; S/N detection stack over the
    available bands; segment the connected component at the centre; mask everything else; divide
    by the footprint's mean flux per pixel summed over bands (colours kept, units cancel);
    asinh compression. Then one significance plane per band: asinh(footprint S/N / s) on the
    footprint, zero elsewhere and for missing bands (unit-free too).
    """
    cfg = config or SegmentationConfig()
    f, masks, found, missing = central_footprints(flux, err, cfg)
    n_bands = f.shape[1]
    ftot, ferr = footprint_photometry(f, masks, _as_batch(flux, err)[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where((ferr > 0) & ~missing, ftot / np.where(ferr > 0, ferr, 1.0), 0.0)
    significance = np.arcsinh(snr / cfg.snr_softening).astype(np.float32)
    out = np.zeros((len(f), input_channels(n_bands)) + f.shape[2:], dtype=np.float32)
    out[:, n_bands:] = significance[:, :, None, None] * masks[:, None]
    no_src = ~found
    nonpos = np.zeros(len(f), dtype=bool)
    for i in range(len(f)):
        mask = masks[i]
        src = f[i] * mask[None]
        total = float(src.sum(dtype=np.float64))
        if total <= 0:
            nonpos[i] = True
            total = float(np.abs(src).sum(dtype=np.float64))
        scale = total / max(int(mask.sum()), 1)
        if scale <= 0 or not np.isfinite(scale):
            continue  # all-zero cutout: stays zero and is flagged through no_central_source
        out[i, :n_bands] = np.arcsinh(src / (scale * cfg.asinh_softening))
    return torch.from_numpy(out), MultibandQuality(missing, no_src, nonpos)


def preprocess_multiband(
    flux: np.ndarray, err: np.ndarray, config: SegmentationConfig | None = None
) -> torch.Tensor:
    """Network input (float32 tensor [N,7,H,W]) of raw cutouts; see
    `preprocess_multiband_with_quality` for the steps and the flags."""
    return preprocess_multiband_with_quality(flux, err, config)[0]


def augment_multiband(
    flux: np.ndarray, err: np.ndarray, rng: np.random.Generator, noise_max: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Training augmentation of one raw cutout [7,H,W]: random 90-degree rotation, random flip,
    and extra Gaussian noise of 0..`noise_max` times the pixel error. Returns (flux, err); the
    error map is rotated with the image and grown to include the added noise."""
    k = int(rng.integers(4))
    out = np.rot90(flux, k, axes=(1, 2))
    e = np.rot90(err, k, axes=(1, 2))
    if rng.random() < 0.5:
        out, e = out[:, :, ::-1], e[:, :, ::-1]
    amp = float(rng.uniform(0.0, noise_max))
    noise = rng.standard_normal(out.shape).astype(np.float32)
    e_ok = np.where(np.isfinite(e), e, 0.0)
    out = np.ascontiguousarray(out + amp * e_ok * noise, dtype=np.float32)
    return out, np.ascontiguousarray(e * np.float32(np.sqrt(1.0 + amp**2)), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------


def probabilities_from_input(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """Softmax class probabilities (float32 [N,3]) of already preprocessed input, eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            logits = model(x[s : s + batch_size].to(device))
            chunks.append(torch.softmax(logits.float(), dim=1).cpu())
    model.train(was_training)
    if not chunks:
        return np.zeros((0, len(REDSHIFT_CLASSES)), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32)


def redshift_probabilities(
    model: nn.Module, flux: np.ndarray, err: np.ndarray, batch_size: int = 256,
    class_priors: str | tuple[float, ...] | None = "survey",
) -> np.ndarray:
    """Pipeline batch interface: raw cutouts float32 [N,7,64,64] flux and error (bands in
    `config.NIRCAM_BANDS` order; NaN / inf / non-positive error where a band has no data) ->
    float32 [N,3] probabilities in `config.REDSHIFT_CLASSES` order. Missing bands are zeroed;
    get their flags from `preprocess_multiband_with_quality` or `multiband_quality`.

    `class_priors`: "survey" (default) shifts the output from the model's training priors to
    its `survey_class_priors` (both in the artefact's architecture config); a tuple shifts to
    those priors instead; None returns the network's own (training-prior) probabilities."""
    return redshift_probabilities_with_quality(model, flux, err, batch_size, class_priors)[0]


def redshift_probabilities_with_quality(
    model: nn.Module, flux: np.ndarray, err: np.ndarray, batch_size: int = 256,
    class_priors: str | tuple[float, ...] | None = "survey",
) -> tuple[np.ndarray, MultibandQuality]:
    """`redshift_probabilities` and the cutouts' quality flags from one preprocessing pass (the
    survey's model stage needs both)."""
    x, quality = preprocess_multiband_with_quality(flux, err)
    probs = probabilities_from_input(model, x, batch_size)
    return apply_class_priors(model, probs, class_priors), quality


def apply_class_priors(model: nn.Module, probs: np.ndarray,
                       class_priors: str | tuple[float, ...] | None = "survey") -> np.ndarray:
    """The prior shift of `redshift_probabilities` on already computed network probabilities."""
    if class_priors is None:
        return probs
    if isinstance(class_priors, str):
        if class_priors != "survey":
            raise ValueError(f"class_priors must be 'survey', a tuple or None, not {class_priors!r}")
        class_priors = getattr(model, "survey_class_priors", SURVEY_CLASS_PRIORS)
    training = getattr(model, "training_class_priors", BALANCED_CLASS_PRIORS)
    return shift_class_priors(probs, training, class_priors)


def multiband_quality(flux: np.ndarray, err: np.ndarray) -> MultibandQuality:
    """Quality flags of raw cutouts without running the network."""
    return preprocess_multiband_with_quality(flux, err)[1]


__all__ = [
    "ChannelAttention", "SpectralResidualBlock", "SpatialResidualBlock", "RedshiftClassifier",
    "he_normal_init", "build_redshift_classifier", "classifier_flops", "SegmentationConfig",
    "MultibandQuality", "valid_pixels", "central_footprints", "preprocess_multiband", "preprocess_multiband_with_quality",
    "redshift_probabilities_with_quality", "footprint_photometry", "input_channels",
    "augment_multiband", "probabilities_from_input", "redshift_probabilities", "multiband_quality",
    "MIN_VALID_FRACTION", "BALANCED_CLASS_PRIORS", "SURVEY_CLASS_PRIORS", "check_class_priors",
    "shift_class_priors", "apply_class_priors",
]
