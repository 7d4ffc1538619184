"""Tiny real inputs for search tests: a SimCLR checkpoint made with the project's own engine and
checkpoint code, digits shards, and a fine-tune config whose epochs take a fraction of a second."""

from __future__ import annotations

import os

import pytest


def make_tiny_checkpoint(root: str) -> str:
    """SimCLR on a 2-stage cnn-tiny, three DeepSpeed (ZeRO 0, CPU) steps, saved as a checkpoint."""
    import torch

    from augtrain.models import create_objective
    from augtrain.pipelines.checkpoint import save_checkpoint
    from augtrain.pipelines.engine import EngineConfig, build_engine, train_step

    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1, "widths": [8, 16]},
                                 proj_hidden_dim=16, proj_dim=8)
    engine = build_engine(objective, EngineConfig(zero_stage=0, device="cpu", micro_batch_size=16, total_steps=3,
                                                  base_lr=1e-3, lr_base_batch_size=16))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        train_step(engine, [torch.randn(16, 1, 8, 8, generator=generator), torch.randn(16, 1, 8, 8, generator=generator)])
    return str(save_checkpoint(engine, root, 3))


def write_digits(root: str) -> tuple[str, str]:
    from augtrain.pipelines.shard_writer import WriteOptions, write_shards
    from augtrain.pipelines.sources import open_source

    paths = []
    for split in ("train", "test"):
        out = os.path.join(root, f"digits-{split}")
        write_shards(open_source("digits", split), out, split, WriteOptions(samples_per_shard=400),
                     progress=lambda _: None)
        paths.append(out)
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(session_tmp) -> str:
    return make_tiny_checkpoint(os.path.join(session_tmp, "tune-pretrain"))


@pytest.fixture(scope="session")
def digits_splits(session_tmp) -> tuple[str, str]:
    return write_digits(os.path.join(session_tmp, "tune-digits"))


@pytest.fixture()
def tiny_cfg(digits_splits):
    from augtrain.pipelines.finetune import FinetuneConfig

    train, test = digits_splits
    return FinetuneConfig(train=train, test=test, labels=120, val_labels=120, channels=1, epochs=6, batch_size=40,
                          lr=3e-3, mode="full", policy="none", eval_batch_size=400)
