"""A class-conditional VAE trained with labels: it starts as the VAE whose weights it is given
(``model.init``), trains on labelled shards under Ray Train + DeepSpeed with both loss terms
falling, reloads to identical outputs, and its checkpoint writes class-labelled shards itself."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from augtrain.cluster.cli import main
from augtrain.models import create_objective
from augtrain.models.vae import ConditionalVAE
from augtrain.pipelines.report.document import Facts, Figure
from augtrain.pipelines.report.finetune import generated_section
from augtrain.pipelines.train.checkpoint import latest_checkpoint, load_model, load_state_dict

SIZES = {"latent_dim": 4, "image_size": 8, "decoder_width": 8}
ENCODER = {"encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1, "widths": [8, 16]}}


def test_the_conditional_vae_begins_as_the_vae_it_is_given_and_learns_its_classes():
    torch.manual_seed(0)
    vae = create_objective("vae", **ENCODER, **SIZES)
    cvae = create_objective("cvae", **ENCODER, num_classes=3, **SIZES)
    missing, unexpected = cvae.load_state_dict(vae.state_dict(), strict=False)
    assert sorted(missing) == ["class_to_decoder.weight", "class_to_posterior.weight"] and not unexpected
    vae.eval(), cvae.eval()
    x, z = torch.randn(6, 1, 8, 8), torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    for a, b in zip(cvae.encode_labelled(x, labels), vae.encode(x)):  # the class embeddings start at zero
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(cvae.decode(z, labels), vae.decoder(z))
    cvae.train()
    loss = cvae([x], labels)
    torch.testing.assert_close(loss.detach(), cvae.loss_terms["recon"] + cvae.loss_terms["kl"])
    loss.backward()
    for table in (cvae.class_to_decoder, cvae.class_to_posterior):  # the class reaches both ends
        assert table.weight.grad.abs().sum(1).gt(0).all()
    # samples: the classes asked for, reproducible; ``sample`` takes the classes in turn
    wanted = torch.tensor([2, 0, 1])
    images = cvae.sample_labelled(wanted, torch.Generator().manual_seed(1))
    assert images.shape == (3, 1, 8, 8) and cvae.training
    torch.testing.assert_close(images, cvae.sample_labelled(wanted, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        cvae.class_to_decoder.weight.normal_()
    cvae.eval()
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(cvae.sample(5, torch.Generator().manual_seed(2)),
                               cvae.decode(z, torch.tensor([0, 1, 2, 0, 1])))
    # a vanishing temperature decodes the prior's mean for each class
    torch.testing.assert_close(cvae.sample_labelled(wanted, temperature=1e-9), cvae.decode(torch.zeros(3, 4), wanted),
                               rtol=1e-4, atol=1e-5)
    # started from labelled images: the VAE with each class's mean posterior mean moved to the centre
    fresh = create_objective("cvae", **ENCODER, num_classes=3, **SIZES)
    fresh.load_state_dict(vae.state_dict(), strict=False)
    fresh.eval()
    state = fresh.start_classes(x, labels)
    centres = torch.stack([vae.encode(x)[0][labels == c].mean(0) for c in range(3)]).detach()
    z = torch.randn(6, 4)
    torch.testing.assert_close(fresh.decode(z, labels), vae.decoder(z + centres[labels]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fresh.encode_labelled(x, labels)[0], vae.encode(x)[0] - centres[labels])
    torch.testing.assert_close(state["class_to_decoder.weight"], fresh.class_to_decoder.weight.detach())
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        fresh.start_classes(x[:4], torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="forward\\(views, labels\\)"):
        cvae([x])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        cvae([x], torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="num_classes >= 2"):
        create_objective("cvae", **ENCODER, num_classes=1, **SIZES)


def _config(tmp_path, name: str, train: str, **sections) -> str:
    data = {
        "name": name, "output": str(tmp_path / name),
        "data": {"train": train, "channels": 1},
        "augment": {"policy": "none", "size": 8},
        "model": {"objective": "vae", "encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1, "widths": [16, 32]},
                  "kwargs": {"latent_dim": 8, "image_size": 8, "decoder_width": 16}},
        "engine": {"zero_stage": 2, "micro_batch_size": 32, "base_lr": 3.0e-3, "warmup_fraction": 0.05},
        "loop": {"epochs": 1, "checkpoint_every": 20, "log_every": 2, "mean": [0.5], "std": [0.5]},
        "cluster": {"workers": 2, "cpus_per_worker": 0.5, "max_failures": 0},
    }
    for section, values in sections.items():
        data[section] = {**data[section], **values}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.timeout(600)
def test_a_conditional_vae_trains_on_labelled_shards_from_a_vae_and_generates_its_classes(ray_local, tmp_path,
                                                                                          digits_splits):
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.train.pretrain import plan_pretraining, starting_objective

    from augtrain.pipelines.train.checkpoint import save_checkpoint
    from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

    train, _ = digits_splits
    # the VAE it starts from: a few DeepSpeed steps in this process (its pretraining under Ray is
    # tests/pipelines/train/test_vae_pretrain.py's)
    torch.manual_seed(0)
    vae = create_objective("vae", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1, "widths": [16, 32]},
                           latent_dim=8, image_size=8, decoder_width=16)
    engine = build_engine(vae, EngineConfig(zero_stage=0, device="cpu", micro_batch_size=16, total_steps=3))
    for _ in range(3):
        train_step(engine, [torch.randn(16, 1, 8, 8)])
    vae_checkpoints = tmp_path / "vae" / "checkpoints"
    save_checkpoint(engine, vae_checkpoints, 3)
    cvae_model = {"objective": "cvae", "init": str(vae_checkpoints)}

    # checked on the driver, before Ray: labels are required, the class count is the manifest's,
    # and every weight of the init checkpoint must be the objective's
    for model, data, match in (
            (cvae_model, {}, "data.label_key"),
            ({**cvae_model, "kwargs": {"latent_dim": 8, "image_size": 8, "decoder_width": 16, "num_classes": 3}},
             {"label_key": "cls"}, "num_classes is 3 but .* has 10 classes"),
            ({**cvae_model, "kwargs": {"latent_dim": 6, "image_size": 8, "decoder_width": 16}},
             {"label_key": "cls"}, "model.init .*' has shape"),
            ({**cvae_model, "init": str(tmp_path / "nowhere")}, {"label_key": "cls"}, "model.init: .*nowhere")):
        with pytest.raises(ValueError, match=match):
            plan_pretraining(load_config(_config(tmp_path, "bad", train, model=model, data=data)))
    plan = plan_pretraining(load_config(_config(tmp_path, "cvae", train, model=cvae_model, data={"label_key": "cls"},
                                                loop={"epochs": 3})))
    vae_checkpoint = latest_checkpoint(vae_checkpoints)
    assert plan.objective_spec["num_classes"] == 10 and plan.init_from == str(vae_checkpoint)
    assert vae_checkpoint.name == "step-00000003"
    # what each worker starts from: the VAE's weights, the class embeddings at zero (not when resuming)
    # and its class embeddings started from the labelled images on the driver
    assert sorted(plan.started) == ["class_to_decoder.weight", "class_to_posterior.weight"]
    started = starting_objective(plan.objective_spec, plan.init_from, resuming=False, started=plan.started).state_dict()
    for name, tensor in load_state_dict(vae_checkpoint).items():
        torch.testing.assert_close(started[name], tensor)
    for name, tensor in plan.started.items():
        torch.testing.assert_close(started[name], tensor)
    fresh = starting_objective(plan.objective_spec, plan.init_from, resuming=True, started=plan.started).state_dict()
    assert not fresh["class_to_decoder.weight"].any()  # resuming: the checkpoint's weights come later, not these
    assert not torch.equal(fresh["to_posterior.weight"], started["to_posterior.weight"])

    assert main(["pretrain", "-c", _config(tmp_path, "cvae", train, model=cvae_model, data={"label_key": "cls"},
                                            loop={"epochs": 3})]) == 0
    run = tmp_path / "cvae"
    rows = list(csv.DictReader(open(run / "metrics" / "metrics.csv")))
    steps = [r for r in rows if r["kind"] == "step"]
    for term in ("loss_recon", "loss_kl"):
        assert all(r[term] != "" for r in rows), term  # logged on every row, steps and epochs
    recon = [float(r["loss_recon"]) for r in steps]  # (the KL grows as the posterior leaves the prior)
    assert np.mean(recon[-3:]) < 0.7 * np.mean(recon[:3]), recon
    for r in steps:  # the logged loss is the sum of its parts (beta = 1)
        assert float(r["loss"]) == pytest.approx(float(r["loss_recon"]) + float(r["loss_kl"]), rel=1e-4)
    grid = Image.open(run / "metrics" / "samples" / "epoch-002.png")
    assert grid.size[0] == 10 * 8 + 11 * 2  # a column per class (8-pixel tiles, 2-pixel padding)

    ckpt = latest_checkpoint(run / "checkpoints")
    a, b = load_model(ckpt).eval(), load_model(ckpt).eval()
    assert isinstance(a, ConditionalVAE) and a.num_classes == 10
    x, labels = torch.randn(4, 1, 8, 8), torch.tensor([3, 1, 4, 1])
    torch.testing.assert_close(a.reconstruct_labelled(x, labels), b.reconstruct_labelled(x, labels))
    torch.testing.assert_close(a.sample(20, torch.Generator().manual_seed(0)),
                               b.sample(20, torch.Generator().manual_seed(0)))
    assert a.class_to_decoder.weight.abs().sum() > 0  # the classes were learnt

    # its samples as shards, labelled by the class the decoder was given, an equal share per class
    from augtrain.pipelines.data.wds_format import iter_raw_samples

    out = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "200", "--out", str(out),
                 "--samples-per-shard", "100"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    synthetic = manifest["synthetic"]
    assert synthetic["labeller"] == "conditional decoder" and synthetic["generator"] == str(ckpt)
    assert synthetic["per_class"] == [20] * 10 and synthetic["kept"] == 200 == manifest["num_samples"]
    assert manifest["class_names"] == json.loads((Path(train) / "manifest.json").read_text())["class_names"]
    samples = [raw for shard in sorted(out.glob("*.tar")) for raw in iter_raw_samples(open(shard, "rb"))]
    assert np.bincount([int(raw.members["cls"]) for raw in samples], minlength=10).tolist() == [20] * 10
    # each image is the decoder's for its label: redrawn with the same seed, labels and temperature
    from augtrain.pipelines.generate import draw_labelled

    images, drawn, _ = draw_labelled(run / "checkpoints", 200, seed=0)
    order = np.random.default_rng(0).permutation(200)  # the shard writer's order (its shuffle seed 0)
    stored = np.stack([np.asarray(Image.open(io.BytesIO(raw.members["png"]))) for raw in samples])
    np.testing.assert_array_equal(stored, images[order][..., 0])
    np.testing.assert_array_equal([int(raw.members["cls"]) for raw in samples], drawn[order])
    # kept only where a classifier agrees: exactly the samples it assigns to their class, the rest counted
    from augtrain.pipelines.finetune import FinetuneConfig, finetune_local, prepare_data
    from augtrain.pipelines.finetune.saved import load_classifier, mean_probabilities

    cfg = FinetuneConfig(train=train, test=digits_splits[1], labels=100, val_labels=0, channels=1, size=8, epochs=2,
                         batch_size=32, lr=3e-3, policy="none", mean=(0.5,), std=(0.5,))
    classifier = finetune_local(cfg, prepare_data(cfg, str(tmp_path / "ft")), str(vae_checkpoints), "none",
                                out_dir=str(tmp_path / "classifier")).checkpoint
    probs = mean_probabilities([load_classifier(classifier, str(vae_checkpoint))], images, 10)
    assert (probs.argmax(1) == drawn).any()
    threshold = float(f"{np.median(probs.max(1)[probs.argmax(1) == drawn]):.6f}")  # half of those it agrees with
    agreed = (probs.argmax(1) == drawn) & (probs.max(1) >= threshold)
    filtered = tmp_path / "filtered"
    assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "200", "--out", str(filtered),
                 "--filter-by", classifier, "--filter-checkpoint", str(vae_checkpoint),
                 "--min-confidence", f"{threshold:.6f}"]) == 0
    record = json.loads((filtered / "manifest.json").read_text())["synthetic"]
    assert record["kept"] == int(agreed.sum()) and record["dropped_by_filter"] == 200 - int(agreed.sum())
    assert record["per_class"] == np.bincount(drawn[agreed], minlength=10).tolist()
    assert record["dropped_by_filter_per_class"] == np.bincount(drawn[~agreed], minlength=10).tolist()
    assert 0 < record["kept"] < 200, record  # (a weak classifier of 8-pixel digits: some agree, not all)
    facts = dict(next(b for b in generated_section(str(filtered), {}).blocks if isinstance(b, Facts)).items)
    assert f"dropped {200 - record['kept']}" in facts["filtered by"]

    section = generated_section(str(out), {"synthetic_fraction": 0.25})  # a fine-tune's report of them
    assert any(isinstance(b, Figure) for b in section.blocks)
    facts = dict(next(b for b in section.blocks if isinstance(b, Facts)).items)
    assert facts["labels"] == "the class given to the conditional decoder" and "temperature 1.0" in facts["prior"]
    # options for unconditional models are refused with a conditional one
    for wrong in (["--condition-on", train], ["--labeller", str(tmp_path)], ["--min-confidence", "0.5"]):
        assert main(["generate", "--checkpoint", str(run / "checkpoints"), "--n", "10",
                     "--out", str(tmp_path / "x"), *wrong]) == 2
    # and a filter needs class-conditional samples
    for wrong in (["--filter-by", classifier], ["--filter-by", classifier, "--labeller", classifier]):
        assert main(["generate", "--checkpoint", str(vae_checkpoints), "--n", "10", "--out", str(tmp_path / "x"),
                     *wrong]) == 2
