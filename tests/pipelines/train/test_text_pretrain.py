"""The text flow on real review snippets: masked language modelling under Ray Train + DeepSpeed
(loss falling, resume), its checkpoint read by transformers, and fine-tuning from it and from
scratch with EDA."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from augtrain.cluster.cli import main
from augtrain.models import create_model, create_objective
from augtrain.models.text import MaskedLM, mask_tokens, texts_of
from augtrain.pipelines.data.text_sources import rotten_tomatoes
from augtrain.pipelines.data.tokenizer import load_tokenizer, train_wordpiece
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.finetune import FinetuneConfig, FinetuneSession, load_data, prepare_data
from augtrain.pipelines.modalities import get_modality
from augtrain.pipelines.train.checkpoint import latest_checkpoint, list_checkpoints, load_model, read_metadata


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> dict[str, str]:
    """Shards of 600 training and 300 test reviews, and a 1,000-token WordPiece of the training ones."""
    root = tmp_path_factory.mktemp("reviews")
    out = {}
    for split, limit in (("train", 600), ("test", 300)):
        source = rotten_tomatoes(split)
        write_shards(source, str(root / split), split, WriteOptions(samples_per_shard=200, limit=limit),
                     progress=lambda _: None)
        out[split] = str(root / split)
    texts = [t for t, _ in rotten_tomatoes("train")][:2000]
    out["tokenizer"] = str(train_wordpiece(texts, root / "tokenizer", vocab_size=1000))
    return out


def test_byte_ids_round_trip_to_the_encoders_tokens(reviews):
    texts = ["A charming, funny film.", "ünïcödé 🎬 is kept", "x"]
    ids = get_modality("text").to_tensor(np.array(texts, dtype=object), (0.0,), (1.0,))
    assert texts_of(ids) == texts
    encoder = create_model("bert-tiny", tokenizer=reviews["tokenizer"])
    tokens, mask = encoder.tokenize(ids)
    assert tokens.shape == mask.shape and mask.sum(1).tolist() == [len(encoder.tokenizer(t)["input_ids"]) for t in texts]
    assert encoder.forward_features(ids).shape == (3, 128) and encoder.spec["tokenizer"] == reviews["tokenizer"]


def test_masking_follows_bert_80_10_10_and_leaves_specials_alone(reviews):
    tokenizer = load_tokenizer(reviews["tokenizer"])
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (400, 64), generator=generator)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    mask = torch.ones_like(ids)
    mask[:, 50:] = 0  # padding
    inputs, labels = mask_tokens(ids, mask, tokenizer, 1000, generator)
    targets = labels != -100
    real = 400 * 48  # not [CLS], not [SEP], not padding
    assert abs(targets.sum().item() / real - 0.15) < 0.01
    assert not targets[:, 0].any() and not targets[:, 50:].any()
    assert (labels[targets] == ids[targets]).all() and (inputs[~targets] == ids[~targets]).all()
    masked = (inputs[targets] == tokenizer.mask_token_id).float().mean().item()
    kept = (inputs[targets] == ids[targets]).float().mean().item()
    assert abs(masked - 0.8) < 0.03 and 0.07 < kept < 0.13
    one = torch.tensor([[tokenizer.cls_token_id, 7, tokenizer.sep_token_id]])
    assert (mask_tokens(one, torch.ones_like(one), tokenizer, 1000, generator)[1] != -100).sum() == 1  # never none


def _experiment(tmp_path, reviews) -> str:
    data = {
        "name": "tiny-mlm",
        "output": str(tmp_path / "run"),
        "data": {"modality": "text", "train": reviews["train"]},
        "augment": {"policy": "none"},
        "model": {"objective": "mlm", "encoder": "bert-tiny",
                  "encoder_kwargs": {"tokenizer": reviews["tokenizer"], "max_length": 64}},
        "engine": {"zero_stage": 2, "micro_batch_size": 30, "base_lr": 3.0e-3, "warmup_fraction": 0.1},
        "loop": {"epochs": 3, "checkpoint_every": 10, "log_every": 2},
        "cluster": {"workers": 2, "cpus_per_worker": 0.5, "max_failures": 0},
    }
    path = tmp_path / "mlm.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.timeout(600)
def test_mlm_pretraining_lowers_its_loss_resumes_and_loads_in_transformers(ray_local, tmp_path, reviews):
    config = _experiment(tmp_path, reviews)
    run = tmp_path / "run"
    assert main(["pretrain", "-c", config, "--set", "loop.max_steps=10"]) == 0
    assert read_metadata(latest_checkpoint(run / "checkpoints"))["step"] == 10
    assert main(["pretrain", "-c", config, "--resume", "latest"]) == 0
    steps = [read_metadata(c)["step"] for c in list_checkpoints(run / "checkpoints")]
    assert max(steps) == 30  # 600 texts / 2 workers / 30 = 10 steps an epoch, 3 epochs, continued from 10
    rows = [r for r in csv.DictReader(open(run / "metrics" / "metrics.csv")) if r["kind"] == "step"]
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses  # from about ln(1000) = 6.9
    model = load_model(latest_checkpoint(run / "checkpoints"))
    assert isinstance(model, MaskedLM)
    from transformers import AutoTokenizer, BertForMaskedLM

    folder = model.save_pretrained(tmp_path / "hf")
    hf = BertForMaskedLM.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    batch = tokenizer(["a [MASK] film"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        ours = model.head(model.encoder.hidden_states(batch["input_ids"], batch["attention_mask"]))
        theirs = hf(**batch).logits
    torch.testing.assert_close(ours, theirs)
    pytest.text_mlm_checkpoint = str(latest_checkpoint(run / "checkpoints"))  # for the fine-tune test below


@pytest.mark.timeout(600)
def test_fine_tuning_text_from_the_mlm_checkpoint_and_from_scratch_with_eda(reviews, tmp_path):
    checkpoint = getattr(pytest, "text_mlm_checkpoint", None)
    if checkpoint is None:  # run alone: a checkpoint of the same objective made here, without Ray
        from augtrain.pipelines.train.checkpoint import save_checkpoint
        from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

        objective = create_objective("mlm", encoder="bert-tiny", encoder_kwargs={"tokenizer": reviews["tokenizer"]})
        engine = build_engine(objective, EngineConfig(zero_stage=0, device="cpu", micro_batch_size=8, total_steps=2))
        ids = get_modality("text").to_tensor(np.array(["a fine film", "dull"] * 4, dtype=object), (0.0,), (1.0,))
        for _ in range(2):
            train_step(engine, [ids])
        checkpoint = str(save_checkpoint(engine, tmp_path / "mlm", 2))
    cfg = FinetuneConfig(train=reviews["train"], test=reviews["test"], modality="text", labels=200, val_labels=100,
                         epochs=3, batch_size=32, lr=3e-4, policy="eda-m2-c4", encoder="bert-tiny",
                         encoder_kwargs={"tokenizer": reviews["tokenizer"]})
    data = load_data(prepare_data(cfg, str(tmp_path / "data")), cfg)
    assert isinstance(data.train[0][0], str) and data.num_classes == 2
    results = {}
    for mode, source in (("full", checkpoint), ("scratch", None)):
        session = FinetuneSession(cfg.with_updates(mode=mode), data, source)
        history = [session.run_epoch(cfg.policy, test=True) for _ in range(cfg.epochs)]
        assert history[-1]["train_loss"] < history[0]["train_loss"] + 0.05
        assert 0.0 <= history[-1]["test_acc"] <= 1.0 and "eda-m2-c4" in history[-1]["policy"]
        results[mode] = history[-1]
        saved = session.save(tmp_path / mode)
        assert json.loads((saved / "finetune.json").read_text())["epoch"] == 3
    # the pretrained encoder's weights started from the checkpoint, the scratch one's did not
    pretrained_embeddings = load_model(checkpoint).encoder.bert.embeddings.word_embeddings.weight
    fresh = FinetuneSession(cfg.with_updates(mode="scratch"), data, None).module.encoder
    assert not torch.equal(fresh.bert.embeddings.word_embeddings.weight, pretrained_embeddings)
    full = FinetuneSession(cfg.with_updates(mode="full"), data, checkpoint).module.encoder
    assert torch.equal(full.bert.embeddings.word_embeddings.weight, pretrained_embeddings)


def test_copies_mix_originals_and_augmented_texts_in_edas_proportion(reviews, tmp_path):
    cfg = FinetuneConfig(train=reviews["train"], test=reviews["test"], modality="text", labels=200, epochs=1,
                         batch_size=32, policy="eda-m4-c3", mode="scratch", encoder="bert-tiny",
                         encoder_kwargs={"tokenizer": reviews["tokenizer"]})
    data = load_data(prepare_data(cfg, str(tmp_path / "data")), cfg)
    session = FinetuneSession(cfg, data, None)
    order = np.arange(len(data.train[1]))
    values = session._augment(get_modality("text").parse_policy("eda-m4-c3"), order)
    unchanged = np.mean([v == data.train[0][i] for v, i in zip(values, order)])
    assert 0.15 < unchanged < 0.45  # 1 original in 4, plus the few texts an op left as they were


def test_fixmatch_on_text_reads_the_pool_as_strings_and_trains(reviews, tmp_path):
    cfg = FinetuneConfig(train=reviews["train"], test=reviews["test"], modality="text", labels=100, val_labels=100,
                         epochs=1, batch_size=8, lr=1e-3, policy="eda-m1-c2", mode="scratch",
                         encoder="text-cnn", encoder_kwargs={"tokenizer": reviews["tokenizer"]},
                         unlabelled={"method": "fixmatch", "ratio": 2, "threshold": 0.5})
    paths = prepare_data(cfg, str(tmp_path / "data"))
    data = load_data(paths, cfg, ("train", "val"))
    pool = data.unlabelled
    assert pool.dtype == object and len(pool) == 600 - 100 - 100 and all(isinstance(t, str) for t in pool)
    subsets = json.loads((tmp_path / "data" / "subset.json").read_text())
    reviews_read_whole = {t for t, _ in rotten_tomatoes("train")} & set(pool)
    assert len(reviews_read_whole) == len(set(pool))  # every pool text is a training review, unchanged
    assert not set(subsets["labelled_keys"]) & set(subsets["val_keys"])
    result = FinetuneSession(cfg, data, None).run_epoch(cfg.policy)
    assert 0.0 <= result["unlabelled_kept"] <= 1.0 and np.isfinite(result["unlabelled_loss"])


def test_text_fine_tunes_mix_features_beside_fixmatchs_pool_through_a_wrapper(reviews, tmp_path):
    """Text mixup mixes the labelled rows' pooled features (the pool's rows pass as they are),
    through a wrapper such as DDP that hands the keyword on."""
    cfg = FinetuneConfig(train=reviews["train"], test=reviews["test"], modality="text", labels=100, val_labels=100,
                         epochs=1, batch_size=8, lr=1e-3, policy="eda-m1-c2", mode="scratch", mixup=1.0,
                         encoder="text-rnn", encoder_kwargs={"tokenizer": reviews["tokenizer"]},
                         unlabelled={"method": "fixmatch", "ratio": 2, "threshold": 0.5})
    assert cfg.mixup_layer == "features"
    data = load_data(prepare_data(cfg, str(tmp_path / "data")), cfg, ("train", "val"))

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    session = FinetuneSession(cfg, data, None, wrap=Wrapper)
    seen: list[int] = []
    session.module.fc.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    result = session.run_epoch(cfg.policy)
    assert np.isfinite(result["train_loss"]) and 0.0 <= result["unlabelled_kept"] <= 1.0
    assert seen[0] == 8 + 2 * 2 * 8  # the labelled batch, then the pool's weak and strong views
