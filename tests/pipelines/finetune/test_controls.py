"""Controls without a training loop: logistic regression on raw pixels (C chosen on validation) and a
weighted kNN of a checkpoint's embeddings, on real digits shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augtrain.pipelines.finetune.controls import knn_of_checkpoint, raw_logistic_regression, weighted_knn
from augtrain.pipelines.finetune import FinetuneConfig, load_data, prepare_data


@pytest.fixture(scope="module")
def data(digits_splits, tmp_path_factory):
    train, test = digits_splits
    cfg = FinetuneConfig(train=train, test=test, labels=200, val_labels=200, channels=1, epochs=1,
                         mean=(0.5,), std=(0.5,))
    paths = prepare_data(cfg, str(tmp_path_factory.mktemp("subsets")))
    return cfg, load_data(paths, cfg)


def test_logistic_regression_on_raw_pixels_is_a_real_baseline(data):
    from sklearn.linear_model import LogisticRegression

    _cfg, d = data
    result = raw_logistic_regression(d)
    assert result.params["C"] in (0.01, 0.1, 1.0) and result.val_acc is not None
    assert result.predictions.shape == d.test[1].shape
    assert result.test_acc == pytest.approx(np.mean(result.predictions == d.test[1]))
    assert result.test_acc > 0.8  # digits are nearly linearly separable; chance is 0.1
    # the chosen C is the best of the three on the validation split
    x = d.train[0].reshape(len(d.train[0]), -1) / 255.0
    mean, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1

    def val_acc(c):
        model = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / sd, d.train[1])
        xv = d.val[0].reshape(len(d.val[0]), -1) / 255.0
        return model.score((xv - mean) / sd, d.val[1])

    assert result.val_acc == pytest.approx(max(val_acc(c) for c in (0.01, 0.1, 1.0)), abs=1e-9)


def test_weighted_knn_votes_by_similarity():
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.1, 1.0]]), dim=1)
    # with k=3 the two near neighbours of class 0 outvote the far one of class 1, and vice versa
    assert weighted_knn(bank, np.array([0, 0, 1]), query, num_classes=2, k=3).tolist() == [0, 1]
    assert weighted_knn(bank, np.array([0, 0, 1]), query, num_classes=2, k=1).tolist() == [0, 1]


def test_knn_of_a_checkpoint(data, tiny_checkpoint):
    cfg, d = data
    result = knn_of_checkpoint(d, cfg, tiny_checkpoint, k=5)
    assert result.predictions.shape == d.test[1].shape and 0.1 < result.test_acc <= 1.0
    assert result.name == "kNN of the checkpoint (k=5)" and result.val_acc is not None


def test_logistic_regression_sees_every_split_at_the_fine_tunes_size(digits_splits, tmp_path):
    # finetune.size resizes the held-out splits; the labelled one keeps its size for the crops of
    # the policy: the control must still compare like with like (it failed with 64 vs 144 features)
    train, test = digits_splits
    cfg = FinetuneConfig(train=train, test=test, labels=200, val_labels=200, channels=1, epochs=1, size=12,
                         mean=(0.5,), std=(0.5,))
    d = load_data(prepare_data(cfg, str(tmp_path / "subsets")), cfg)
    assert d.train[0].shape[1:3] == (8, 8) and d.test[0].shape[1:3] == (12, 12)
    result = raw_logistic_regression(d)
    assert result.test_acc > 0.8 and result.predictions.shape == d.test[1].shape


def test_knn_embeds_the_labelled_subset_at_the_fine_tunes_size(digits_splits, tmp_path):
    # finetune.size resizes the held-out splits only; the kNN's bank must be embedded at the same
    # size (EfficientNet-Lite0 at 64 px failed on the 28-px labelled images)
    from augtrain.pipelines.train.checkpoint import save_packaged_checkpoint

    train, test = digits_splits
    cfg = FinetuneConfig(train=train, test=test, labels=200, val_labels=200, channels=1, epochs=1, size=64,
                         mean=(0.5,), std=(0.5,))
    d = load_data(prepare_data(cfg, str(tmp_path / "subsets")), cfg)
    checkpoint = save_packaged_checkpoint("efficientnet-lite0", tmp_path / "lite0", in_chans=1)
    result = knn_of_checkpoint(d, cfg, str(checkpoint), k=5)
    assert result.predictions.shape == d.test[1].shape and result.test_acc > 0.5  # ImageNet features; chance 0.1
