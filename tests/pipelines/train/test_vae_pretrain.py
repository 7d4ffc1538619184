"""Generative pretraining: a VAE on real Fashion-style shards (the digits split written by the test)
under Ray Train + DeepSpeed, its two loss terms logged apart and both falling, a sample grid per
epoch, the checkpoint reloaded to identical outputs, and its encoder fine-tuned."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from augtrain.cluster.cli import main
from augtrain.models import create_objective
from augtrain.models.vae import VAE
from augtrain.pipelines.finetune import FinetuneConfig, FinetuneSession, load_data, prepare_data
from augtrain.pipelines.train.checkpoint import latest_checkpoint, load_model


def test_the_vae_loss_is_its_two_terms_and_it_samples_images():
    torch.manual_seed(0)
    vae = create_objective("vae", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1, "widths": [8, 16]},
                           latent_dim=4, image_size=8, decoder_width=8)
    x = torch.randn(5, 1, 8, 8)
    loss = vae([x])
    terms = vae.loss_terms
    assert set(terms) == {"recon", "kl"} and float(terms["kl"]) >= 0
    torch.testing.assert_close(loss.detach(), terms["recon"] + terms["kl"])
    assert vae.sample(6, torch.Generator().manual_seed(1)).shape == (6, 1, 8, 8)
    torch.testing.assert_close(vae.sample(3, torch.Generator().manual_seed(1)),
                               vae.sample(3, torch.Generator().manual_seed(1)))  # the same latents, the same images
    assert vae.training  # sampling left the mode as it found it
    with pytest.raises(ValueError, match="divisible by 4"):
        create_objective("vae", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1}, image_size=10)


@pytest.mark.timeout(600)
def test_vae_pretraining_logs_both_terms_falling_samples_and_initialises_a_finetune(ray_local, tmp_path,
                                                                                     digits_splits):
    train, test = digits_splits
    data = {
        "name": "tiny-vae", "output": str(tmp_path / "run"),
        "data": {"train": train, "channels": 1},
        "augment": {"policy": "none", "size": 8},
        "model": {"objective": "vae", "encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1, "widths": [16, 32]},
                  "kwargs": {"latent_dim": 8, "image_size": 8, "decoder_width": 16}},
        "engine": {"zero_stage": 2, "micro_batch_size": 32, "base_lr": 3.0e-3, "warmup_fraction": 0.05},
        "loop": {"epochs": 4, "checkpoint_every": 20, "log_every": 2, "mean": [0.5], "std": [0.5]},
        "cluster": {"workers": 2, "cpus_per_worker": 0.5, "max_failures": 0},
    }
    config = tmp_path / "vae.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["pretrain", "-c", str(config)]) == 0
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "metrics" / "metrics.csv")))
    steps = [r for r in rows if r["kind"] == "step"]
    for term in ("loss_recon", "loss_kl"):
        assert all(r[term] != "" for r in rows), term  # logged on every row, steps and epochs
    recon = [float(r["loss_recon"]) for r in steps]
    assert np.mean(recon[-3:]) < 0.7 * np.mean(recon[:3]), recon
    for r in steps:  # the logged loss is the sum of its parts (beta = 1)
        assert float(r["loss"]) == pytest.approx(float(r["loss_recon"]) + float(r["loss_kl"]), rel=1e-4)
    grids = sorted((run / "metrics" / "samples").glob("epoch-*.png"))
    assert [g.name for g in grids] == [f"epoch-{e:03d}.png" for e in range(4)]
    assert Image.open(grids[-1]).size[0] > 8 * 8  # 64 tiles

    ckpt = latest_checkpoint(run / "checkpoints")
    a, b = load_model(ckpt).eval(), load_model(ckpt).eval()
    assert isinstance(a, VAE)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(a.reconstruct(x), b.reconstruct(x))
    torch.testing.assert_close(a.sample(4, torch.Generator().manual_seed(0)),
                               b.sample(4, torch.Generator().manual_seed(0)))

    cfg = FinetuneConfig(train=train, test=test, labels=100, val_labels=100, channels=1, size=8, epochs=3,
                         batch_size=32, lr=3e-3, policy="none", mean=(0.5,), std=(0.5,))
    paths = prepare_data(cfg, str(tmp_path / "ft"))
    session = FinetuneSession(cfg, load_data(paths, cfg), str(ckpt))
    torch.testing.assert_close(session.module.encoder.state_dict()["stages.0.0.weight"],
                               a.encoder.state_dict()["stages.0.0.weight"])  # the VAE's encoder, not a fresh one
    history = [session.run_epoch("none", test=True) for _ in range(3)]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and 0 <= history[-1]["test_acc"] <= 1
