"""SimCLR (Chen et al. 2020): projection head and NT-Xent loss, in pure torch.

With several ranks each rank scores its own anchors against the embeddings of every rank
(all-gathered with gradient), so the negatives come from the global batch and the mean of the
per-rank losses equals the one-process loss on the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augtrain.models import distributed
from augtrain.models.registry import create_model, register_objective


class ProjectionHead(nn.Module):
    """g(h) = W2 relu(W1 h): h: [B, D] -> z: [B, out_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def nt_xent_loss(q: torch.Tensor, k: torch.Tensor, offset: int = 0,
                 temperature: float = 0.1) -> torch.Tensor:
    """Normalized-temperature cross-entropy of local anchors against all embeddings.

    q: [2B, D] this rank's embeddings, rows [0, B) view 1 and [B, 2B) view 2 of the same samples.
    k: [M, D] every rank's embeddings laid out the same way per rank (M = 2B * world size);
       q == k[offset : offset + 2B].
    The positive of anchor i is its other view; every other row of k is a negative.
    Returns the mean over the 2B anchors.
    """
    two_b = q.shape[0]
    if two_b % 2:
        raise ValueError(f"q must hold two views of each sample, got {two_b} rows")
    b = two_b // 2
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    logits = q @ k.T / temperature  # [2B, M]
    rows = torch.arange(two_b, device=q.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, offset + rows] = True
    logits = logits.masked_fill(is_self, float("-inf"))  # an anchor is not its own negative
    positive = offset + (rows + b) % two_b
    return F.cross_entropy(logits, positive)


class SimCLR(nn.Module):
    """Encoder + projection head; forward(views) -> NT-Xent loss over two views."""

    num_views = 2

    def __init__(self, encoder: nn.Module, proj_hidden_dim: int = 512, proj_dim: int = 128,
                 temperature: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.num_features, proj_hidden_dim, proj_dim)
        self.temperature = temperature

    def embed(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """views: 2 x [B, C, H, W] -> z: [2B, proj_dim]."""
        x = torch.cat(list(views), dim=0)
        return self.head(self.encoder.forward_features(x))

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(views) != 2:
            raise ValueError(f"SimCLR takes 2 views per sample, got {len(views)}")
        q = self.embed(views)  # [2B, P]
        k = distributed.gather_with_grad(q)  # [W * 2B, P]
        offset = distributed.rank() * q.shape[0]
        return nt_xent_loss(q, k, offset, self.temperature)

    def export_encoder(self, head_layers: int = 0) -> nn.Module:
        """The encoder (`forward_features: [B, C, H, W] -> [B, D]`) for fine-tuning; with
        `head_layers` = k, followed by the first k layers of the projection head (SimCLRv2, Chen
        et al. 2020b: fine-tuning from the head's middle layer helps most with 1 % of the labels)."""
        if head_layers == 0:
            return self.encoder
        return EncoderWithHead(self.encoder, self.head.net, head_layers)


class EncoderWithHead(nn.Module):
    """An encoder followed by the first `layers` linear layers (each with its activation) of a
    projection head: `forward_features: x -> [B, hidden]`."""

    def __init__(self, encoder: nn.Module, head: nn.Sequential, layers: int) -> None:
        super().__init__()
        linear = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
        if not 1 <= layers < len(linear):
            raise ValueError(f"head_layers must be in [0, {len(linear) - 1}] for this head, got {layers}")
        end = linear[layers]  # up to the next linear layer: the kept layers' activations included
        self.encoder = encoder
        self.head = nn.Sequential(*list(head)[:end])
        self.num_features = head[linear[layers - 1]].out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@register_objective("simclr")
def simclr(encoder_name: str, encoder_kwargs: dict[str, Any], proj_hidden_dim: int = 512,
           proj_dim: int = 128, temperature: float = 0.1) -> SimCLR:
    """SimCLR around any registered encoder."""
    encoder = create_model(encoder_name, **encoder_kwargs)
    return SimCLR(encoder, proj_hidden_dim, proj_dim, temperature)
