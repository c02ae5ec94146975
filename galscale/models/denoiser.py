"""U-Net variational autoencoder that removes contaminants and noise from morphology cutouts.

Seed 001: a U-Net VAE maps a contaminated, noisy 3-channel cutout (scaled to [0, 1]) to the clean
galaxy. The encoder halves the resolution four times (256 -> 16); the 16x16 bottleneck is
variational (per-pixel mean and log-variance of a `latent_channels`-channel Gaussian, sampled by
reparameterisation while training, its mean at inference); skip connections carry the encoder
features to the decoder, which ends in a sigmoid. With `residual=True` (default) the decoder
predicts a correction in logit space, sigmoid(logit(input) + correction), initialised to zero:
training starts from the identity instead of from a grey image, which matters for the small
CPU training budgets here (residual learning as in DnCNN). Loss = reconstruction (binary cross-entropy as
in the paper, or MSE) + beta * KL(q(z|x) || N(0, 1)).

The network is sized for CPU survey throughput (about 1.3 GFLOP per 256x256 cutout, counted by
`count_flops`): strided convolutions downsample, one 3x3 convolution per level, narrow early
levels. The pipeline runs `export()` (mean path only) through `denoise_batch`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galscale.models.device import run_batched

RESIDUAL_EPS = 1e-3  # inputs are clamped to [eps, 1 - eps] before the logit of the residual path


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture arguments of `UNetVAE` (stored in the artefact config)."""

    in_channels: int = 3
    widths: tuple[int, ...] = (12, 20, 40, 64, 96)  # channels at 256, 128, 64, 32, 16 px
    latent_channels: int = 32  # channels of the 16x16 variational bottleneck
    recon_loss: str = "bce"  # "bce" (paper) or "mse"
    beta: float = 1e-3  # weight of the KL term (per pixel-channel, like the reconstruction term)
    residual: bool = True  # output = sigmoid(logit(input) + correction): starts as the identity

    def __post_init__(self) -> None:
        if self.recon_loss not in ("bce", "mse"):
            raise ValueError(f"recon_loss must be 'bce' or 'mse', not {self.recon_loss!r}")
        if len(self.widths) < 2:
            raise ValueError("widths needs at least two levels")


def _conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNetVAE(nn.Module):
    """U-Net with a variational bottleneck. `forward` returns (reconstruction, mu, logvar)."""

    def __init__(self, config: DenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config or DenoiserConfig()
        w = self.config.widths
        self.stem = _conv_block(self.config.in_channels, w[0])
        self.down = nn.ModuleList(_conv_block(w[i], w[i + 1], stride=2) for i in range(len(w) - 1))
        zc = self.config.latent_channels
        self.to_stats = nn.Conv2d(w[-1], 2 * zc, 1)
        self.from_latent = _conv_block(zc, w[-1])
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(len(w) - 1))
        )
        self.merge = nn.ModuleList(_conv_block(2 * w[i], w[i]) for i in reversed(range(len(w) - 1)))
        self.head = nn.Conv2d(w[0], self.config.in_channels, 1)
        if self.config.residual:  # zero correction at initialisation: the network starts as identity
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Skip features (fine to coarse) and the bottleneck's mean and log-variance."""
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(h)
            skips.append(h)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return skips[:-1], mu, logvar.clamp(-20.0, 10.0)

    def decode(self, skips: list[torch.Tensor], z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid reconstruction in [0, 1] from the latent, the skip features and the input."""
        h = self.from_latent(z)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            h = merge(torch.cat([up(h), skip], dim=1))
        logits = self.head(h)
        if self.config.residual:
            logits = logits + torch.logit(x.clamp(RESIDUAL_EPS, 1.0 - RESIDUAL_EPS))
        return torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_input(x, self.config.in_channels, len(self.config.widths) - 1)
        skips, mu, logvar = self.encode(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(skips, z, x), mu, logvar

    def export(self) -> DenoiserInference:
        """The deterministic inference module (mean latent, no sampling), in eval mode."""
        return DenoiserInference(self).eval()


class DenoiserInference(nn.Module):
    """Mean-path denoiser: image batch in [0, 1] -> denoised batch in [0, 1]. What the survey runs."""

    def __init__(self, vae: UNetVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.vae.config.in_channels, len(self.vae.config.widths) - 1)
        skips, mu, _ = self.vae.encode(x)
        return self.vae.decode(skips, mu, x)


def _check_input(x: torch.Tensor, channels: int, levels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected a [N, {channels}, H, W] batch, got shape {tuple(x.shape)}")
    step = 2**levels
    if x.shape[2] % step or x.shape[3] % step:
        raise ValueError(f"height and width must be multiples of {step}, got {tuple(x.shape[2:])}")


def denoiser_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    recon_loss: str = "bce",
    beta: float = 1e-3,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction (mean BCE or MSE per pixel-channel) + beta * mean KL per latent element."""
    if recon_loss == "bce":
        rec = F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), target)
    elif recon_loss == "mse":
        rec = F.mse_loss(recon, target)
    else:
        raise ValueError(f"recon_loss must be 'bce' or 'mse', not {recon_loss!r}")
    kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
    loss = rec + beta * kl
    with torch.no_grad():
        mse = F.mse_loss(recon, target).item()
    # no "loss" key: the training loop records the returned loss itself
    return loss, {"recon": rec.item(), "kl": kl.item(), "mse": mse}


def build_denoiser(**architecture: object) -> UNetVAE:
    """Registry builder: `UNetVAE` from the JSON architecture dict of an artefact."""
    if "widths" in architecture:
        architecture = {**architecture, "widths": tuple(architecture["widths"])}  # type: ignore[arg-type]
    return UNetVAE(DenoiserConfig(**architecture))  # type: ignore[arg-type]


def architecture_dict(config: DenoiserConfig) -> dict:
    """JSON-ready architecture arguments, the inverse of `build_denoiser`."""
    d = asdict(config)
    d["widths"] = list(config.widths)
    return d


def count_flops(module: nn.Module, size: int = 256, channels: int = 3) -> int:
    """Floating-point operations of one forward pass on a single [channels, size, size] cutout."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, channels, size, size))
    module.train(was_training)
    return int(counter.get_total_flops())


def denoise_batch(
    model: nn.Module, images: np.ndarray | torch.Tensor, *, batch_size: int = 32
) -> np.ndarray:
    """Denoise float32 [N, 3, H, W] images in [0, 1]; returns float32 [N, 3, H, W] in [0, 1].

    `model` is a `DenoiserInference` (from `export()` or `registry.load_model`) or a `UNetVAE`
    (then its mean path is used). Non-finite pixels are an error: the caller flags such cutouts.
    """
    if isinstance(model, UNetVAE):
        model = model.export()
    if len(images) == 0:
        return np.zeros(np.shape(images), dtype=np.float32)
    return run_batched(model, images, batch_size, lambda y: y, "denoising")


__all__ = [
    "DenoiserConfig", "UNetVAE", "DenoiserInference", "denoiser_loss", "build_denoiser",
    "architecture_dict", "count_flops", "denoise_batch",
]
