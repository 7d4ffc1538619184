"""A variational autoencoder for small images (Kingma and Welling 2014), around any registered
image encoder: the encoder's embedding gives the posterior's mean and log-variance, a transposed
convolution decoder maps a latent back to the image.

The reconstruction term is the Gaussian log-likelihood of the (normalised) pixels with a fixed
standard deviation ``recon_sigma`` (up to a constant), summed over pixels; the KL term is the
closed-form divergence from the standard normal prior, weighted by ``beta`` (Higgins et al. 2017
when != 1). Both are exposed after every forward pass as ``loss_terms`` so that the training loop
logs them separately. ``export_encoder`` returns the encoder, so a VAE checkpoint initialises a
fine-tune like a SimCLR one; ``sample`` draws images from the prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from augtrain.models.registry import create_model, register_objective


class ConvDecoder(nn.Module):
    """z: [B, latent] -> images [B, channels, size, size] (size divisible by 4): a linear map to a
    (size/4)^2 grid, then two stride-2 transposed convolutions and a 3x3 output convolution."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"the VAE decoder needs an image side divisible by 4, got {size}")
        side = size // 4
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * side * side), nn.ReLU(inplace=True),
            nn.Unflatten(1, (2 * width, side, side)),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, channels, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VAE(nn.Module):
    """forward(views) -> the negative ELBO of the first view (mean over the batch)."""

    num_views = 1
    loss_term_names = ("recon", "kl")

    def __init__(self, encoder: nn.Module, latent_dim: int = 32, image_size: int = 28, channels: int = 1,
                 beta: float = 1.0, recon_sigma: float = 0.3, decoder_width: int = 64) -> None:
        super().__init__()
        if recon_sigma <= 0 or beta < 0 or latent_dim < 1:
            raise ValueError(f"VAE: recon_sigma must be > 0, beta >= 0 and latent_dim >= 1 "
                             f"(got {recon_sigma}, {beta}, {latent_dim})")
        self.encoder = encoder
        self.latent_dim, self.beta, self.recon_sigma = latent_dim, beta, recon_sigma
        self.to_posterior = nn.Linear(encoder.num_features, 2 * latent_dim)
        self.decoder = ConvDecoder(latent_dim, channels, image_size, decoder_width)
        self.loss_terms: dict[str, torch.Tensor] = {}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, C, H, W] -> posterior mean and log-variance, each [B, latent]."""
        mean, logvar = self.to_posterior(self.encoder.forward_features(x)).float().chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 10.0)

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(views) != 1:
            raise ValueError(f"the VAE takes 1 view per sample, got {len(views)}")
        x = views[0]
        mean, logvar = self.encode(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        recon = self.decoder(z.to(x.dtype)).float()
        recon_term = ((recon - x.float()) ** 2).flatten(1).sum(1).mean() / (2 * self.recon_sigma ** 2)
        kl = (-0.5 * (1 + logvar - mean ** 2 - logvar.exp())).sum(1).mean()
        self.loss_terms = {"recon": recon_term.detach(), "kl": kl.detach()}
        return recon_term + self.beta * kl

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from the prior, in the normalised space the VAE was trained in."""
        weight = next(self.decoder.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator).to(weight.device, weight.dtype)
        was_training = self.training
        self.eval()  # BatchNorm's running statistics, not the batch's
        try:
            return self.decoder(z).float()
        finally:
            self.train(was_training)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's image of each input's posterior mean."""
        return self.decoder(self.encode(x)[0].to(x.dtype))

    def export_encoder(self) -> nn.Module:
        """The encoder (``forward_features: [B, C, H, W] -> [B, D]``), for fine-tuning."""
        return self.encoder


@register_objective("vae", modalities=("image",))
def vae(encoder_name: str, encoder_kwargs: dict[str, Any], latent_dim: int = 32, image_size: int = 28,
        beta: float = 1.0, recon_sigma: float = 0.3, decoder_width: int = 64) -> VAE:
    """A VAE around any registered image encoder (its ``in_chans`` is the images' channels)."""
    encoder = create_model(encoder_name, **encoder_kwargs)
    return VAE(encoder, latent_dim, image_size, int(encoder_kwargs.get("in_chans", 3)), beta, recon_sigma,
               decoder_width)
