"""A validation subset of whole groups (``finetune.val_group_key``): no group on both sides of the
labelled/validation split, stratified, recorded, and clear errors for a pool without groups or
with too few."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augtrain.pipelines.data.sources import open_source
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.finetune import FinetuneConfig
from augtrain.pipelines.finetune.subsets import load_arrays, prepare_subsets


def _pool(tmp_path, groups: bool = True) -> str:
    """600 texts of 40 films (15 each, sizes unequal by class), labels 0/1; the film is in the text."""
    path = tmp_path / "reviews.jsonl"
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(600):
            film = f"film{i % 40:02d}"
            f.write(json.dumps({"text": f"{film} review {i}", "label": str(int(rng.random() < 0.3)), "film": film}) + "\n")
    source = open_source(f"text:{path}", "train", group_field="film" if groups else None)
    out = tmp_path / ("pool" if groups else "pool-plain")
    write_shards(source, str(out), "train", WriteOptions(samples_per_shard=200), progress=lambda _: None)
    return str(out)


def _films(spec: str) -> list[str]:
    texts, _, _ = load_arrays(spec, None, modality="text")
    return [str(t).split()[0] for t in texts]


def test_the_validation_subset_takes_whole_groups_the_labelled_subset_never_touches(tmp_path):
    pool = _pool(tmp_path)
    paths = prepare_subsets(pool, str(tmp_path / "subsets"), labels=100, seed=3, val=60, modality="text",
                            val_group_key="group")
    labelled, val = _films(paths.labelled), _films(paths.val)
    assert len(labelled) == 100 and len(val) == 60
    assert not set(labelled) & set(val)
    # whole groups drawn until they hold 60 samples: 4 films of 15
    assert paths.record["val_groups"] == 4 and paths.record["val_group_samples"] == 60 and len(set(val)) == 4
    assert paths.record["val_group_keys"] == []  # every sample of the 4 films is validating
    _, val_labels, _ = load_arrays(paths.val, None, modality="text")
    _, lab_labels, _ = load_arrays(paths.labelled, None, modality="text")
    assert 0.15 < val_labels.mean() < 0.45 and 0.15 < lab_labels.mean() < 0.45  # both stratified near 0.3
    again = prepare_subsets(pool, str(tmp_path / "again"), labels=100, seed=3, val=60, modality="text",
                            val_group_key="group")
    assert again.record["val_keys"] == paths.record["val_keys"]  # seeded
    more = prepare_subsets(pool, str(tmp_path / "more"), labels=100, seed=3, val=50, modality="text",
                           val_group_key="group")
    # the rest of the last film drawn stays out of the labelled subset and of an unlabelled pool
    assert more.record["val_group_samples"] == 60 and len(more.record["val_group_keys"]) == 10
    from augtrain.pipelines.finetune.unlabelled import held_out_keys

    excluded, _ = held_out_keys(more.labelled)
    assert len(excluded) == 100 + 60
    plain = prepare_subsets(pool, str(tmp_path / "plain"), labels=100, seed=3, val=60, modality="text")
    assert set(_films(plain.labelled)) & set(_films(plain.val))  # without groups, films are shared
    assert "val_groups" not in plain.record


def test_group_validation_errors_name_the_key_and_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="set finetune.val_labels"):
        FinetuneConfig(val_group_key="group")
    with pytest.raises(ValueError, match=r"val_group_key 'group': sample '\d+' of .* has no \.group member"):
        prepare_subsets(_pool(tmp_path, groups=False), str(tmp_path / "a"), labels=50, seed=0, val=30,
                        modality="text", val_group_key="group")
    with pytest.raises(ValueError, match=r"finetune.labels: cannot draw 500 samples from 495 available \(outside the validation groups"):
        prepare_subsets(_pool(tmp_path), str(tmp_path / "b"), labels=500, seed=0, val=100, modality="text",
                        val_group_key="group")
