"""Generative pretraining: a VAE on real Fashion-style shards (the digits split written by the test)
under Ray Train + DeepSpeed, its two loss terms logged apart and both falling, a sample grid per
epoch, the checkpoint reloaded to identical outputs, and its encoder fine-tuned."""

from __future__ import annotations

import csv
import io
import json

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


def test_the_class_prior_holds_each_class_aggregate_posterior_moments_and_draws_its_classes():
    torch.manual_seed(0)
    vae = create_objective("vae", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1, "widths": [8, 16]},
                           latent_dim=4, image_size=8, decoder_width=8)
    x, labels = torch.randn(12, 1, 8, 8), torch.tensor([0, 1, 2] * 4)
    prior = vae.fit_class_prior(x, labels, 3)
    vae.eval()
    mean, logvar = (t.detach().double() for t in vae.encode(x))
    vae.train()
    for c in range(3):
        rows = labels == c
        np.testing.assert_allclose(prior.mean[c], mean[rows].mean(0).numpy(), rtol=1e-5)
        expected = mean[rows].var(0, unbiased=False) + logvar[rows].exp().mean(0)  # mixture variance
        np.testing.assert_allclose(prior.std[c] ** 2, expected.numpy(), rtol=1e-5)
    assert prior.counts == (4, 4, 4) and vae.training
    wanted = torch.tensor([2, 0, 1, 1])
    images = vae.sample_classes(wanted, prior, torch.Generator().manual_seed(3))
    assert images.shape == (4, 1, 8, 8)
    torch.testing.assert_close(images, vae.sample_classes(wanted, prior, torch.Generator().manual_seed(3)))
    # a vanishing temperature decodes each class's mean
    vae.eval()
    torch.testing.assert_close(vae.sample_classes(wanted, prior, temperature=1e-9),
                               vae.decoder(torch.from_numpy(prior.mean)[wanted].float()), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"class\(es\) \[3\]"):
        vae.fit_class_prior(x, labels, 4)
    with pytest.raises(ValueError, match="labels must be in"):
        vae.sample_classes(torch.tensor([3]), prior)


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
        "loop": {"epochs": 3, "checkpoint_every": 20, "log_every": 2, "mean": [0.5], "std": [0.5]},
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
    assert [g.name for g in grids] == [f"epoch-{e:03d}.png" for e in range(3)]
    assert Image.open(grids[-1]).size[0] > 8 * 8  # 64 tiles

    ckpt = latest_checkpoint(run / "checkpoints")
    a, b = load_model(ckpt).eval(), load_model(ckpt).eval()
    assert isinstance(a, VAE)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(a.reconstruct(x), b.reconstruct(x))
    torch.testing.assert_close(a.sample(4, torch.Generator().manual_seed(0)),
                               b.sample(4, torch.Generator().manual_seed(0)))

    cfg = FinetuneConfig(train=train, test=test, labels=100, val_labels=100, channels=1, size=8, epochs=2,
                         batch_size=32, lr=3e-3, policy="none", mean=(0.5,), std=(0.5,))
    paths = prepare_data(cfg, str(tmp_path / "ft"))
    session = FinetuneSession(cfg, load_data(paths, cfg), str(ckpt))
    torch.testing.assert_close(session.module.encoder.state_dict()["stages.0.0.weight"],
                               a.encoder.state_dict()["stages.0.0.weight"])  # the VAE's encoder, not a fresh one
    history = [session.run_epoch("none", test=True) for _ in range(2)]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and 0 <= history[-1]["test_acc"] <= 1

    # generated samples as shards: pseudo-labelled by the fine-tune, their provenance in the manifest
    from augtrain.pipelines.data.shard_set import ShardSpecError
    from augtrain.pipelines.data.wds_format import iter_raw_samples
    from augtrain.pipelines.finetune import finetune_local

    labeller = finetune_local(cfg, paths, str(ckpt), "none", out_dir=str(tmp_path / "labeller")).checkpoint

    def generate(out, *more) -> tuple[dict, list]:
        assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "300", "--out", str(out),
                     "--labeller", labeller, "--labeller-checkpoint", str(ckpt), "--samples-per-shard", "100",
                     *more]) == 0
        samples = [raw for shard in sorted(out.glob("*.tar")) for raw in iter_raw_samples(open(shard, "rb"))]
        return json.loads((out / "manifest.json").read_text()), samples

    manifest, samples = generate(tmp_path / "gen-all")
    synthetic = manifest["synthetic"]
    assert synthetic["generator"] == str(ckpt) and synthetic["drawn"] == 300 == synthetic["kept"] == len(samples)
    assert synthetic["labeller"] == labeller and sum(synthetic["per_class"]) == 300
    assert manifest["num_samples"] == 300 and manifest["extensions"] == ["cls", "conf", "png"]
    assert all(0 <= int(raw.members["cls"]) < 10 for raw in samples)
    assert np.asarray(Image.open(io.BytesIO(samples[0].members["png"]))).shape == (8, 8)
    # a confidence filter drops exactly the samples below it (the same seed draws the same images), counted
    confidences = np.array([float(raw.members["conf"]) for raw in samples])
    threshold = float(np.median(confidences))
    out = tmp_path / "gen"
    manifest, samples = generate(out, "--min-confidence", f"{threshold}")
    kept = int((confidences >= threshold).sum())  # the stored confidences are rounded to 6 decimals
    assert abs(len(samples) - kept) <= 2 and manifest["synthetic"]["kept"] == len(samples)
    assert manifest["synthetic"]["dropped_below_confidence"] == 300 - len(samples)
    assert all(float(raw.members["conf"]) >= threshold - 1e-6 for raw in samples)
    # the same seed draws the same images
    assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "20", "--out", str(tmp_path / "g1")]) == 0
    assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "20", "--out", str(tmp_path / "g2")]) == 0
    assert [p.read_bytes() for p in sorted((tmp_path / "g1").glob("*.tar"))] == \
        [p.read_bytes() for p in sorted((tmp_path / "g2").glob("*.tar"))]
    # class-conditional samples: a prior fitted to the fine-tune's labelled subset, the class drawn
    # as the label, an equal share per class, their label fidelity by a real-data classifier
    def conditional(out, *more) -> tuple[dict, list]:
        assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "300", "--out", str(out),
                     "--condition-on", paths.labelled, "--judge", labeller, "--judge-checkpoint", str(ckpt),
                     "--samples-per-shard", "100", *more]) == 0
        samples = [raw for shard in sorted(out.glob("*.tar")) for raw in iter_raw_samples(open(shard, "rb"))]
        return json.loads((out / "manifest.json").read_text()), samples

    # the prior is fitted to the labelled images as the VAE saw images in training: (pixel / 255 - mean) / std
    from augtrain.pipelines.finetune.subsets import load_arrays
    from augtrain.pipelines.generate import fit_class_prior

    values, value_labels, _ = load_arrays(paths.labelled, channels=1)
    by_hand = torch.from_numpy((values.astype(np.float32) / 255 - 0.5) / 0.5).permute(0, 3, 1, 2)
    expected = a.fit_class_prior(by_hand, torch.from_numpy(value_labels), 10)
    fitted, names = fit_class_prior(a, paths.labelled, [0.5], [0.5], channels=1)
    np.testing.assert_allclose(fitted.mean, expected.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.std, expected.std, rtol=1e-5, atol=1e-6)
    assert len(names) == 10

    manifest, samples = conditional(tmp_path / "cond")
    synthetic = manifest["synthetic"]
    assert synthetic["labeller"] == "class-conditional" and synthetic["conditioned_on"] == paths.labelled
    assert synthetic["per_class"] == [30] * 10 and synthetic["kept"] == 300 == len(samples)
    assert synthetic["class_prior"]["counts"] == [10] * 10 and manifest["extensions"] == ["cls", "png"]
    assert np.bincount([int(raw.members["cls"]) for raw in samples], minlength=10).tolist() == [30] * 10
    assert synthetic["judge"] == labeller and synthetic["judge_test_acc"] is None  # a bare checkpoint records none
    fidelity = synthetic["label_fidelity_per_class"]
    assert len(fidelity) == 10 and synthetic["label_fidelity"] == pytest.approx(np.mean(fidelity))
    # the fidelity is the judge's agreement with the stored labels (a model this small and this briefly
    # trained carries little class information; benchmarks/generative_quality.py measures a real one)
    from augtrain.pipelines.finetune.saved import load_classifier, mean_probabilities

    images = np.stack([np.asarray(Image.open(io.BytesIO(raw.members["png"])))[..., None] for raw in samples])
    stored = np.array([int(raw.members["cls"]) for raw in samples])
    predicted = mean_probabilities([load_classifier(labeller, str(ckpt))], images, 10).argmax(1)
    assert synthetic["label_fidelity"] == pytest.approx(float((predicted == stored).mean()))
    again, _ = conditional(tmp_path / "cond2")
    assert [p.read_bytes() for p in sorted((tmp_path / "cond").glob("*.tar"))] == \
        [p.read_bytes() for p in sorted((tmp_path / "cond2").glob("*.tar"))]
    for wrong in (["--labeller", labeller], ["--min-confidence", "0.5"]):  # options that would be ignored: refused
        assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "10", "--out", str(tmp_path / "x"),
                     "--condition-on", paths.labelled, *wrong]) == 2
    assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "10", "--out", str(tmp_path / "x"),
                 "--temperature", "0.5"]) == 2
    from augtrain.pipelines.report.document import Facts, Figure
    from augtrain.pipelines.report.finetune import generated_section

    section = generated_section(str(tmp_path / "cond"), {"synthetic_fraction": 0.25})
    assert any(isinstance(b, Figure) for b in section.blocks)
    facts = dict(next(b for b in section.blocks if isinstance(b, Facts)).items)
    assert facts["labels"].startswith("class-conditional") and "label fidelity" in facts

    # never a test split, never the pool a validation subset is drawn from
    with pytest.raises(ShardSpecError, match="generated samples"):
        prepare_data(cfg.with_updates(test=str(out)), str(tmp_path / "ft-bad"))
    with pytest.raises(ShardSpecError, match="generated samples"):
        prepare_data(cfg.with_updates(train=str(out)), str(tmp_path / "ft-bad2"))
