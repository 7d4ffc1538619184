"""A fine-tune config for search tests whose epochs take a fraction of a second (the tiny
checkpoint and digits shards are shared fixtures, tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def tiny_cfg(digits_splits):
    from augtrain.pipelines.finetune import FinetuneConfig

    train, test = digits_splits
    return FinetuneConfig(train=train, test=test, labels=120, val_labels=120, channels=1, epochs=6, batch_size=40,
                          lr=3e-3, mode="full", policy="none", eval_batch_size=400)
