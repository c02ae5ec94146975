"""Fully connected VAE for rest-frame prism spectra (seed 003, section 2.1). Pure torch.

Encoder d -> 512 -> 256 -> 128 -> 64 -> (mu, logvar) in 16-D; decoder mirrors it. Every hidden
dense layer is followed by batch norm, LeakyReLU and dropout; dropout falls from 0.2 to 0.1
towards the bottleneck in the encoder and rises back in the decoder. The reconstruction loss
is the paper's masked squared error (eq. 2): only measured grid points count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

DEFAULT_HIDDEN: tuple[int, ...] = (512, 256, 128, 64)
DEFAULT_LATENT = 16


def _dropouts(n: int, first: float, last: float) -> list[float]:
    return [float(v) for v in np.linspace(first, last, n)] if n > 1 else [first]


def _dense_block(n_in: int, n_out: int, p: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.LeakyReLU(0.1), nn.Dropout(p)
    )


class SpectralVAE(nn.Module):
    """VAE over a d-point spectrum; `forward` returns (reconstruction, mu, logvar)."""

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        latent_dim: int = DEFAULT_LATENT,
        dropout_outer: float = 0.2,
        dropout_inner: float = 0.1,
    ) -> None:
        super().__init__()
        if n_inputs < 1 or latent_dim < 1 or not hidden:
            raise ValueError("n_inputs, latent_dim must be >= 1 and hidden must be non-empty")
        self.n_inputs = int(n_inputs)
        self.latent_dim = int(latent_dim)
        widths = [self.n_inputs, *[int(h) for h in hidden]]
        p_enc = _dropouts(len(hidden), dropout_outer, dropout_inner)
        self.encoder = nn.Sequential(
            *[_dense_block(widths[i], widths[i + 1], p_enc[i]) for i in range(len(hidden))]
        )
        self.to_mu = nn.Linear(widths[-1], latent_dim)
        self.to_logvar = nn.Linear(widths[-1], latent_dim)
        dec_widths = [latent_dim, *reversed([int(h) for h in hidden])]
        p_dec = list(reversed(p_enc))
        self.decoder = nn.Sequential(
            *[_dense_block(dec_widths[i], dec_widths[i + 1], p_dec[i]) for i in range(len(hidden))],
            nn.Linear(dec_widths[-1], self.n_inputs),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h).clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar


def build_spectral_vae(
    n_inputs: int,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    latent_dim: int = DEFAULT_LATENT,
    dropout_outer: float = 0.2,
    dropout_inner: float = 0.1,
) -> SpectralVAE:
    """Registry builder ("galscale.models.spectral_vae:build_spectral_vae")."""
    return SpectralVAE(n_inputs, tuple(hidden), latent_dim, dropout_outer, dropout_inner)


def masked_mse_per_spectrum(
    x: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over each spectrum's measured points ([N]; NaN if none measured)."""
    m = mask.to(x.dtype)
    return ((recon - x) ** 2 * m).sum(dim=1) / m.sum(dim=1)


def vae_loss(
    x: torch.Tensor,
    mask: torch.Tensor,
    recon: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked reconstruction (eq. 2: sum over measured points, mean over spectra) + beta * KL."""
    m = mask.to(x.dtype)
    rec_sum = ((recon - x) ** 2 * m).sum(dim=1).mean()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()
    loss = rec_sum + beta * kl
    mse = (((recon - x) ** 2 * m).sum() / m.sum().clamp_min(1.0)).item()
    return loss, {"loss": loss.item(), "recon_sum": rec_sum.item(), "kl": kl.item(), "recon_mse": mse}


__all__ = [
    "DEFAULT_HIDDEN", "DEFAULT_LATENT", "SpectralVAE", "build_spectral_vae",
    "masked_mse_per_spectrum", "vae_loss",
]
