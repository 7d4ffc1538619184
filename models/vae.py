"""A variational autoencoder for small images (Kingma and Welling 2014), around any registered
image encoder: the encoder's embedding gives the posterior's mean and log-variance, a transposed
convolution decoder maps a latent back to the image.

The reconstruction term is the Gaussian log-likelihood of the (normalised) pixels with a fixed
standard deviation ``recon_sigma`` (up to a constant), summed over pixels; the KL term is the
closed-form divergence from the standard normal prior, weighted by ``beta`` (Higgins et al. 2017
when != 1). Both are exposed after every forward pass as ``loss_terms`` so that the training loop
logs them separately. ``export_encoder`` returns the encoder, so a VAE checkpoint initialises a
fine-tune like a SimCLR one; ``sample`` draws images from the prior.

Class-conditional samples come from the same model through a ``ClassPrior``: one diagonal
Gaussian per class in the latent space, fitted to the posteriors of the labelled images
(``fit_class_prior``), from which ``sample_classes`` draws before decoding. This is conditional
generation from an unconditional generative model by modelling the labelled data's region of its
latent space (Engel et al. 2018, "Latent constraints"), here with the simplest such model, so that
the labels a fine-tune has (100 or 600 images) steer a VAE trained on every unlabelled image.

A VAE trained with the labels is the ``cvae`` objective (``ConditionalVAE``; Sohn et al. 2015's
conditional VAE, the generative model of Kingma et al. 2014's M2 with the class observed): the
class enters the posterior q(z | x, y) and the decoder p(x | z, y), so that z need not carry it,
and ``sample_labelled`` decodes prior draws for the classes asked for. It is meant to be trained
on a labelled subset starting from an unconditional VAE's weights (``model.init``): the encoder,
posterior head and decoder are the VAE's, and the class enters through two embeddings added to
the posterior head's output and to the decoder's first layer. Started at zero, they leave the
class unused: the VAE's latent already carries it, so training on a few labelled images barely
moves them (100 Fashion-MNIST labels: its samples agree with their class no more than chance).
``start_classes`` starts them from the labelled images instead, as the VAE with each class's
latent region moved to the prior's centre.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
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

    def forward(self, z: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """``shift`` [B, hidden] is added to the first layer's output (a conditional decoder's class)."""
        if shift is None:
            return self.net(z)
        return self.net[1:](self.net[0](z) + shift.to(z.dtype))

    @property
    def hidden(self) -> int:
        return self.net[0].out_features


@dataclass(frozen=True)
class ClassPrior:
    """Per class c a diagonal Gaussian N(mean[c], std[c]^2) in a VAE's latent space: the moments of
    the class's aggregate posterior (the mixture of its labelled images' posteriors), so mean[c] is
    the mean of their posterior means and std[c]^2 the variance of those means plus their mean
    posterior variance."""

    mean: np.ndarray  # float64 [classes, latent]
    std: np.ndarray  # float64 [classes, latent]
    counts: tuple[int, ...]  # labelled images per class it was fitted on

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "counts": list(self.counts)}


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
        self.image_size = image_size
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
        return self._negative_elbo(x, *self.encode(x), self.decoder)

    def _negative_elbo(self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                       decode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The loss of ``x`` with posterior (``mean``, ``logvar``): a reparameterised draw through
        ``decode``, its Gaussian reconstruction term plus ``beta`` x the KL term (both kept in
        ``loss_terms``)."""
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        recon = decode(z.to(x.dtype)).float()
        recon_term = ((recon - x.float()) ** 2).flatten(1).sum(1).mean() / (2 * self.recon_sigma ** 2)
        kl = (-0.5 * (1 + logvar - mean ** 2 - logvar.exp())).sum(1).mean()
        self.loss_terms = {"recon": recon_term.detach(), "kl": kl.detach()}
        return recon_term + self.beta * kl

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode inside (BatchNorm's running statistics, not the batch's), the caller's mode after."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @torch.no_grad()
    def _posteriors(self, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional posterior means and log-variances of ``x`` (float32, on the CPU), in
        eval mode, ``batch_size`` images at a time."""
        weight = next(self.decoder.parameters())
        with self._evaluating():
            parts = [self.encode(x[lo:lo + batch_size].to(weight.device, weight.dtype))
                     for lo in range(0, len(x), batch_size)]
        return torch.cat([m for m, _ in parts]).cpu(), torch.cat([lv for _, lv in parts]).cpu()

    @staticmethod
    def _check_every_class(labels: torch.Tensor, num_classes: int, what: str) -> None:
        missing = [c for c in range(num_classes) if not bool((labels == c).any())]
        if missing:
            raise ValueError(f"{what} needs labelled images of every class; none of class(es) {missing}")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from the prior, in the normalised space the VAE was trained in."""
        weight = next(self.decoder.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator).to(weight.device, weight.dtype)
        with self._evaluating():
            return self.decoder(z).float()

    @torch.no_grad()
    def fit_class_prior(self, x: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        batch_size: int = 512) -> ClassPrior:
        """The ``ClassPrior`` of labelled images ``x`` [N, C, H, W] (normalised as in training) with
        int ``labels`` [N]; every class needs at least one image (a ValueError names those without)."""
        labels = torch.as_tensor(labels).long().cpu()
        if len(labels) != len(x):
            raise ValueError(f"{len(x)} images but {len(labels)} labels")
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if len(outside):
            raise ValueError(f"labels must be in [0, {num_classes}); found {sorted(set(outside.tolist()))[:5]}")
        self._check_every_class(labels, num_classes, "a class-conditional prior")
        mean, logvar = self._posteriors(x, batch_size)
        mean, var = mean.double(), logvar.double().exp()
        means, stds, counts = [], [], []
        for c in range(num_classes):
            rows = labels == c
            m, v = mean[rows], var[rows]
            spread = m.var(dim=0, unbiased=False) if len(m) > 1 else torch.zeros_like(m[0])
            means.append(m.mean(0))
            stds.append((spread + v.mean(0)).sqrt())
            counts.append(int(rows.sum()))
        return ClassPrior(torch.stack(means).numpy(), torch.stack(stds).numpy(), tuple(counts))

    @torch.no_grad()
    def sample_classes(self, labels: torch.Tensor, prior: ClassPrior, generator: torch.Generator | None = None,
                       temperature: float = 1.0) -> torch.Tensor:
        """One image of each class in ``labels`` [N], decoded from ``prior`` (its standard deviations
        scaled by ``temperature``), in the normalised space the VAE was trained in."""
        labels = torch.as_tensor(labels).long().cpu()
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= prior.num_classes):
            raise ValueError(f"labels must be in [0, {prior.num_classes}), got {int(labels.min())}..{int(labels.max())}")
        if prior.mean.shape[1] != self.latent_dim:
            raise ValueError(f"the prior has {prior.mean.shape[1]} latent dimensions, the VAE {self.latent_dim}")
        eps = torch.randn(len(labels), self.latent_dim, generator=generator, dtype=torch.float64)
        z = torch.from_numpy(prior.mean)[labels] + temperature * torch.from_numpy(prior.std)[labels] * eps
        weight = next(self.decoder.parameters())
        with self._evaluating():
            return self.decoder(z.to(weight.device, weight.dtype)).float()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's image of each input's posterior mean."""
        return self.decoder(self.encode(x)[0].to(x.dtype))

    def export_encoder(self) -> nn.Module:
        """The encoder (``forward_features: [B, C, H, W] -> [B, D]``), for fine-tuning."""
        return self.encoder


class ConditionalVAE(VAE):
    """forward(views, labels) -> the negative ELBO of the first view given its class (mean over the
    batch). ``labels``: int [B] in [0, num_classes)."""

    uses_labels = True

    def __init__(self, encoder: nn.Module, num_classes: int, latent_dim: int = 32, image_size: int = 28,
                 channels: int = 1, beta: float = 1.0, recon_sigma: float = 0.3, decoder_width: int = 64) -> None:
        super().__init__(encoder, latent_dim, image_size, channels, beta, recon_sigma, decoder_width)
        if num_classes < 2:
            raise ValueError(f"a conditional VAE needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.class_to_posterior = nn.Embedding(num_classes, 2 * latent_dim)
        self.class_to_decoder = nn.Embedding(num_classes, self.decoder.hidden)
        for table in (self.class_to_posterior, self.class_to_decoder):  # begins as the unconditional VAE
            nn.init.zeros_(table.weight)

    def _classes(self, labels: torch.Tensor, n: int) -> torch.Tensor:
        labels = torch.as_tensor(labels).long()
        if labels.shape != (n,):
            raise ValueError(f"expected {n} labels, got shape {tuple(labels.shape)}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {int(labels.min())}..{int(labels.max())}")
        return labels.to(self.class_to_decoder.weight.device)

    def encode_labelled(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, y): posterior mean and log-variance, each [B, latent]."""
        labels = self._classes(labels, len(x))
        params = self.to_posterior(self.encoder.forward_features(x)).float() + self.class_to_posterior(labels).float()
        mean, logvar = params.chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, self.class_to_decoder(self._classes(labels, len(z))))

    def forward(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        if len(views) != 1:
            raise ValueError(f"the conditional VAE takes 1 view per sample, got {len(views)}")
        if labels is None:
            raise ValueError("the conditional VAE trains on labelled images: forward(views, labels)")
        x = views[0]
        return self._negative_elbo(x, *self.encode_labelled(x, labels), lambda z: self.decode(z, labels))

    @torch.no_grad()
    def start_classes(self, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
        """Class embeddings that make this model the unconditional VAE (its current weights) with
        each class's latent region moved to the prior's centre: with m_c the mean posterior mean
        of the labelled images ``x`` of class c, the posterior of (x, c) is the VAE's shifted by
        -m_c and the decoder of (z, c) is the VAE's decoder at z + m_c. A prior draw decoded with
        class c is then an image of the region c's labelled images occupy (what ``fit_class_prior``
        models for a VAE), and training refines it. Returns the two embeddings' weights (also set
        here); every class needs an image."""
        labels = torch.as_tensor(labels).long().cpu()
        self._check_every_class(labels, self.num_classes, "starting the class embeddings")
        means = self._posteriors(x, batch_size)[0]
        centres = torch.stack([means[labels == c].mean(0) for c in range(self.num_classes)])  # [K, latent]
        first = self.decoder.net[0].weight.detach().float().cpu()  # [hidden, latent]
        state = {"class_to_decoder.weight": centres @ first.T,
                 "class_to_posterior.weight": torch.cat([-centres, torch.zeros_like(centres)], dim=1)}
        self.load_state_dict(state, strict=False)
        return state

    @torch.no_grad()
    def sample_labelled(self, labels: torch.Tensor, generator: torch.Generator | None = None,
                        temperature: float = 1.0) -> torch.Tensor:
        """One image of each class in ``labels`` [N]: z from the prior N(0, temperature^2 I), decoded
        with the class, in the normalised space the model was trained in."""
        labels = torch.as_tensor(labels).long().cpu()
        weight = next(self.decoder.parameters())
        z = temperature * torch.randn(len(labels), self.latent_dim, generator=generator)
        with self._evaluating():
            return self.decode(z.to(weight.device, weight.dtype), labels).float()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images, the classes in turn (0, 1, ..., num_classes - 1, 0, ...), so that a grid of
        ``num_classes`` columns has a class per column."""
        return self.sample_labelled(torch.arange(n) % self.num_classes, generator)

    @torch.no_grad()
    def reconstruct_labelled(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The decoder's image of each input's posterior mean given its class."""
        return self.decode(self.encode_labelled(x, labels)[0].to(x.dtype), labels)


@register_objective("vae", modalities=("image",))
def vae(encoder_name: str, encoder_kwargs: dict[str, Any], latent_dim: int = 32, image_size: int = 28,
        beta: float = 1.0, recon_sigma: float = 0.3, decoder_width: int = 64) -> VAE:
    """A VAE around any registered image encoder (its ``in_chans`` is the images' channels)."""
    encoder = create_model(encoder_name, **encoder_kwargs)
    return VAE(encoder, latent_dim, image_size, int(encoder_kwargs.get("in_chans", 3)), beta, recon_sigma,
               decoder_width)


@register_objective("cvae", modalities=("image",))
def cvae(encoder_name: str, encoder_kwargs: dict[str, Any], num_classes: int, latent_dim: int = 32,
         image_size: int = 28, beta: float = 1.0, recon_sigma: float = 0.3, decoder_width: int = 64) -> ConditionalVAE:
    """A conditional VAE around any registered image encoder, trained on labelled images
    (``data.label_key``); its parameters are a ``vae``'s of the same sizes plus two class
    embeddings, so ``model.init`` can start it from a VAE checkpoint."""
    encoder = create_model(encoder_name, **encoder_kwargs)
    return ConditionalVAE(encoder, int(num_classes), latent_dim, image_size, int(encoder_kwargs.get("in_chans", 3)),
                          beta, recon_sigma, decoder_width)
