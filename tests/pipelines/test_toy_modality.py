"""A modality registered by this file alone runs through the shard writer, the Ray Data reader,
the DeepSpeed train loop, fine-tuning and the linear control: no other file knows about it.

The "toyvector" modality stores float32 vectors of length 16 as ``.vec`` members; its
augmentation catalogue has two ops; its encoder is a small MLP. Classes differ by the sign
pattern of the mean vector, so a model that reads its inputs learns them quickly.

Registration happens at import, as a plug-in's would. A test file is not importable in Ray's
worker processes (an installed plug-in package would be), so its objects travel by value
(cloudpickle's ``register_pickle_by_value``); the modality and its catalogue register themselves
in the workers they reach.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import ray.cloudpickle
import torch
from torch import nn

from augtrain.augment import Op, Policy
from augtrain.augment.registry import Catalogue, OpDef, list_catalogues, register_catalogue
from augtrain.models import create_objective, list_models, register_model
from augtrain.pipelines.data.reader import ReaderConfig, ShardReader
from augtrain.pipelines.data.shard_set import ShardSpecError, open_shards
from augtrain.pipelines.data.sources import Source
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.modalities import (
    DecodeSpec,
    Modality,
    ModalityError,
    SampleError,
    get_modality,
    list_modalities,
    register_modality,
)

NAME, DIM, CLASSES = "toyvector", 16, 3


# ---------------------------------------------------------------- the plug-in: catalogue, modality, encoder


def _noise_params(rng, m, args, h, w, size):
    return {"std": m / 10.0, "seed": float(rng.integers(1 << 30))}


def _noise(x, p):
    return x + np.random.default_rng(int(p["seed"])).normal(0.0, p["std"], x.shape).astype(x.dtype)


def _scale_params(rng, m, args, h, w, size):
    return {"factor": float(1.0 + rng.uniform(-1.0, 1.0) * m / 20.0)}


TOY_OPS = {
    "noise": OpDef("noise", _noise_params, _noise, ("std", "seed"), uses_magnitude=True, kind="value"),
    "scale": OpDef("scale", _scale_params, lambda x, p: (x * p["factor"]).astype(x.dtype), ("factor",),
                   uses_magnitude=True, kind="value"),
}


def _standard(spec: str):
    if spec == "none":
        return Policy(name="none", num_ops=(1.0,), modality=NAME)
    if spec == "jitter":
        return Policy(name="jitter", pre=(Op("noise", magnitude=3.0), Op("scale", p=0.5, magnitude=4.0)),
                      modality=NAME)
    return None


class ToyVectorModality(Modality):
    name = NAME
    members = ("vec",)
    column = "vector"
    formats = ("vec",)

    def decode(self, ext: str, data: bytes, spec: DecodeSpec) -> np.ndarray:
        if len(data) != 4 * DIM:
            raise SampleError("bad vector", f"{len(data)} bytes, expected {4 * DIM}")
        return np.frombuffer(data, dtype=np.float32).copy()

    def encode(self, value: np.ndarray, fmt: str | None = None) -> tuple[str, bytes]:
        return "vec", np.asarray(value, dtype=np.float32).tobytes()

    def to_tensor(self, column: np.ndarray, mean, std) -> torch.Tensor:
        return (torch.as_tensor(np.asarray(column, dtype=np.float32)) - mean[0]) / std[0]


class ToyMLP(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.num_features = width
        self.body = nn.Sequential(nn.Linear(DIM, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
if NAME not in list_catalogues():
    register_catalogue(Catalogue(NAME, TOY_OPS, _standard, ("jitter", "none")))
if NAME not in list_modalities():
    register_modality(ToyVectorModality())
if "toy-mlp" not in list_models():
    register_model("toy-mlp", modalities=(NAME,))(ToyMLP)


# ---------------------------------------------------------------- data


def _toy_source(n: int, seed: int, name: str) -> Source:
    rng = np.random.default_rng(seed)
    centres = np.sign(np.random.default_rng(99).normal(size=(CLASSES, DIM))).astype(np.float32)
    labels = rng.integers(0, CLASSES, n)
    values = centres[labels] + rng.normal(0.0, 1.0, (n, DIM)).astype(np.float32)
    return Source(name, [f"c{i}" for i in range(CLASSES)], n, lambda i: (values[i], int(labels[i])), NAME)


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyvector")
    paths = {}
    for split, n, seed in (("train", 600, 0), ("test", 300, 1)):
        out = str(root / split)
        manifest = write_shards(_toy_source(n, seed, "toy"), out, split, WriteOptions(samples_per_shard=200),
                                progress=lambda _: None)
        assert (manifest.modality, manifest.extensions) == (NAME, ["cls", "vec"])
        paths[split] = out
    return paths


# ---------------------------------------------------------------- through every stage


def _reader(spec: str, views: int) -> ShardReader:
    modality = get_modality(NAME)
    transform = modality.sample_transform("jitter", size=None, views=views)
    return ShardReader(open_shards(spec, modality=NAME),
                       ReaderConfig(seed=1, decode=DecodeSpec(label_key="cls", modality=NAME)), transform)


def test_the_reader_decodes_and_augments_through_the_modality(ray_local, toy_shards):
    reader = _reader(toy_shards["train"], views=2)
    iterator = reader.epoch_iterator(0, 0, 1, batch_size=100)
    batches = list(iterator)
    assert sum(len(b["__index__"]) for b in batches) == 600
    first = batches[0]
    assert first["view0"].shape == first["view1"].shape == (100, DIM) and first["view0"].dtype == np.float32
    assert not np.allclose(first["view0"], first["view1"])  # two independent draws of the policy
    assert set(first["label"].tolist()) <= set(range(CLASSES))
    assert iterator.progress().skipped.total == 0


def test_the_train_loop_pretrains_an_encoder_of_the_modality(ray_local, toy_shards, tmp_path):
    from augtrain.pipelines.train.engine import EngineConfig
    from augtrain.pipelines.train.loop import LoopConfig, pretrain

    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="toy-mlp", proj_hidden_dim=16, proj_dim=8, temperature=0.5)
    losses = []
    result = pretrain(objective, _reader(toy_shards["train"], views=2),
                      EngineConfig(zero_stage=0, device="cpu", micro_batch_size=50, base_lr=1e-3,
                                   lr_base_batch_size=50, warmup_steps=1, total_steps=24),
                      LoopConfig(epochs=2, checkpoint_dir=str(tmp_path / "ckpt"), mean=(0.0,), std=(1.0,)),
                      on_step=lambda record: losses.append(record.loss))
    assert result["step"] == 24 and result["checkpoint"] is not None
    assert np.isfinite(losses).all() and np.mean(losses[-6:]) < np.mean(losses[:6])


def test_fine_tuning_and_the_linear_control_use_the_modality(toy_shards, tmp_path):
    from augtrain.pipelines.finetune import FinetuneConfig, finetune_local, load_data, prepare_data
    from augtrain.pipelines.finetune.controls import raw_logistic_regression

    cfg = FinetuneConfig(train=toy_shards["train"], test=toy_shards["test"], modality=NAME, labels=150,
                         val_labels=60, mode="scratch", encoder="toy-mlp", policy="jitter", epochs=15,
                         batch_size=32, lr=3e-3, mean=(0.0,), std=(1.0,))
    paths = prepare_data(cfg, str(tmp_path / "data"))
    assert (paths.num_labelled, open_shards(paths.labelled).manifest.modality) == (150, NAME)
    result = finetune_local(cfg, paths, None, cfg.policy)
    assert result.metrics["test_acc"] > 0.8  # chance is 1/3
    assert result.history[0]["policy"].startswith(f"{NAME}:jitter")
    control = raw_logistic_regression(load_data(paths, cfg))
    assert control.name == "logistic regression on raw values" and control.test_acc > 0.8


def test_configs_of_another_modality_are_refused_before_any_cluster_work(toy_shards):
    from augtrain.pipelines.train.config import ConfigError, parse_config
    from augtrain.pipelines.train.pretrain import plan_pretraining

    image_config = parse_config({"name": "wrong", "data": {"train": toy_shards["train"]}})
    manifest = os.path.join(toy_shards["train"], "manifest.json")
    with pytest.raises(ShardSpecError, match=rf"{manifest}: field 'modality' is '{NAME}', but 'image'"):
        plan_pretraining(image_config)
    toy_with_image_encoder = parse_config({"name": "wrong", "data": {"train": toy_shards["train"], "modality": NAME},
                                           "augment": {"policy": "jitter"}})
    with pytest.raises(ModalityError, match=rf"model.encoder: 'cnn-tiny' is made for image data, not '{NAME}'"):
        plan_pretraining(toy_with_image_encoder)
    with pytest.raises(ConfigError, match="data.modality: .*unknown modality 'audio'"):
        parse_config({"name": "wrong", "data": {"train": toy_shards["train"], "modality": "audio"}})


def test_the_toy_ops_change_values_and_keep_the_shape():
    x = np.linspace(-1.0, 1.0, DIM, dtype=np.float32)
    rng = np.random.default_rng(0)
    for name, opdef in TOY_OPS.items():
        out = opdef.apply(x, opdef.sample(rng, 5.0, {}, DIM, 1, None))
        assert out.shape == x.shape and out.dtype == x.dtype and not np.allclose(out, x), name
