"""The search on text: successive halving over EDA's ops, magnitude and copies with the
fine-tune's hyperparameters, beside EDA's grid, TrivialAugment's rule over the text ops, random
search and every control (TF-IDF + logistic regression, kNN and linear probe of the MLM
checkpoint, BERT from scratch), on a real local Ray with real review snippets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augtrain.augment import Policy
from augtrain.pipelines.data.text_sources import rotten_tomatoes
from augtrain.pipelines.data.tokenizer import train_wordpiece
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.finetune import FinetuneConfig
from augtrain.pipelines.modalities import get_modality
from augtrain.tune.config import parse_search_config
from augtrain.tune.report import write_results
from augtrain.tune.search import check_searchable, plan_search, run_search
from augtrain.tune.space import JointSpace

ROWS = ("TF-IDF of words and word pairs: logistic regression", "checkpoint: kNN (k=20)", "checkpoint: linear probe",
        "scratch: none", "scratch: searched", "pretrained: none", "pretrained: text-trivialaugment",
        "pretrained: EDA best (magnitude 2, 2 copies) of 1-point grid", "pretrained: random search",
        "pretrained: searched (halving, 2 -> 1)")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from augtrain.models import create_objective
    from augtrain.pipelines.train.checkpoint import save_checkpoint
    from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

    root = tmp_path_factory.mktemp("text-search")
    for split, limit in (("train", 400), ("test", 150)):
        write_shards(rotten_tomatoes(split), str(root / split), split, WriteOptions(limit=limit), progress=lambda _: None)
    tokenizer = str(train_wordpiece([t for t, _ in rotten_tomatoes("train")][:1500], root / "tok", vocab_size=800))
    objective = create_objective("mlm", encoder="bert-tiny", encoder_kwargs={"tokenizer": tokenizer, "max_length": 48})
    engine = build_engine(objective, EngineConfig(zero_stage=0, device="cpu", micro_batch_size=16, total_steps=3))
    texts = np.array([t for t, _ in rotten_tomatoes("train")][:48], dtype=object)
    for i in range(3):
        train_step(engine, [get_modality("text").to_tensor(texts[16 * i:16 * (i + 1)], (0.0,), (1.0,))])
    checkpoint = str(save_checkpoint(engine, root / "mlm", 3))
    cfg = FinetuneConfig(train=str(root / "train"), test=str(root / "test"), modality="text", labels=100,
                         val_labels=60, epochs=2, batch_size=25, lr=3e-4, policy="none", encoder="bert-tiny",
                         encoder_kwargs={"tokenizer": tokenizer, "max_length": 48})
    return cfg, checkpoint


def test_text_search_settings_are_checked_for_the_modality(text_run):
    cfg, _ = text_run
    with pytest.raises(ValueError, match="pbt.*image ops, not text"):
        check_searchable(cfg, parse_search_config({"method": "pbt"}))
    with pytest.raises(ValueError, match="search.space.crop: text policies have no crop"):
        check_searchable(cfg, parse_search_config({"space": {"crop": [0.5]}}))
    with pytest.raises(Exception, match="unknown policy 'basic' for modality 'text'"):
        check_searchable(cfg, parse_search_config({"baselines": {"policies": ["basic"]}}))
    space = parse_search_config({}).space.build("text")
    point = space.sample(np.random.default_rng(3))
    assert point["aug_modality"] == "text" and point["aug_copies"] in (1, 2, 4, 8, 16)
    policy, hparams = JointSpace.decode({**point, "aug_n": 1, "aug_ops": "eda", "aug_m": 2})
    assert (policy.modality, policy.copies, len(policy.choices)) == ("text", point["aug_copies"], 4)
    assert set(hparams) == {"lr", "weight_decay", "label_smoothing"}


@pytest.mark.slow  # minutes of BERT trials; the image searches cover the machinery in the default run
@pytest.mark.timeout(900)
def test_halving_over_text_policies_writes_its_policy_and_every_control(ray_local, text_run, tmp_path):
    cfg, checkpoint = text_run
    search = parse_search_config({
        "halving": {"candidates": 2, "eta": 2, "min_fraction": 0.5},
        "space": {"n": [1], "copies": [1, 2], "m": [1, 4]},
        "baselines": {"eda_m": [2], "eda_c": [2]},
        "resources": {"executor": "local", "reserve_cpus": 0, "max_concurrent": 4}, "evaluate_seeds": [1]})
    run = plan_search(cfg, search, checkpoint, tmp_path / "out", "text-search")
    results = run_search(run)
    summary = write_results(results, tmp_path / "out", cfg.epochs)
    comparison = (tmp_path / "out" / "comparison.md").read_text()
    for row in ROWS:  # a missing control fails the test
        assert f"| {row}" in comparison, row
    assert "test vs EDA best" in comparison and "## Did it help?" in comparison
    rows = {r["method"]: r for r in summary["comparison"]}
    assert rows[ROWS[0]]["test_acc"] > 0.4 and rows["scratch: none"]["seeds"] == 2
    policy = Policy.from_json((tmp_path / "out" / "best_policy.json").read_text())
    point = json.loads((tmp_path / "out" / "best_point.json").read_text())["point"]
    assert policy.to_string().startswith("modality=text|") and policy == JointSpace.policy(point)
    assert policy.copies in (1, 2)
    assert summary["dali_export"] == {"error": "DALI has no text ops"}
