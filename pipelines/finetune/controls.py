"""Controls that need no fine-tuning loop, computed on the same labelled subset and test split as
every fine-tune: a linear model on the raw features (logistic regression on pixels) and a
k-nearest-neighbour classifier on a checkpoint's embeddings.

    data = load_data(paths, cfg)                              # the fine-tune's own arrays
    raw = raw_logistic_regression(data, cfg)                  # ControlResult: test_acc, predictions
    knn = knn_of_checkpoint(data, cfg, "runs/fmnist-simclr")  # weighted kNN of the frozen encoder

Both answer "did the method beat the obvious?": a fine-tuned model below ``raw`` learnt nothing a
linear model on the pixels would not; a fine-tune below ``knn`` lost what pretraining gave it.
The regularisation of the logistic regression is chosen on the validation split when there is
one (the fine-tunes are selected on it too), so the control is as strong as its method allows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from augtrain.pipelines.finetune.config import FinetuneConfig
from augtrain.pipelines.finetune.data import FinetuneData
from augtrain.pipelines.finetune.model import load_encoder
from augtrain.pipelines.modalities import get_modality



@dataclass
class ControlResult:
    """One control's accuracy on the validation and test splits, and its test predictions."""

    name: str
    val_acc: float | None
    test_acc: float
    predictions: np.ndarray  # int [N_test], the test split's order
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)


def labelled_at_test_size(data: FinetuneData) -> np.ndarray:
    """The labelled subset's values at the held-out splits' size: ``finetune.size`` resizes those
    when they are read, the labelled subset keeps its own for the policy's crops, and a control
    must see all three alike."""
    if data.size is None:
        return data.train[0]
    modality = get_modality(data.modality)
    return modality.stack([modality.resize(v, data.size) for v in data.train[0]], "the labelled subset")


def raw_logistic_regression(data: FinetuneData, c_values: tuple[float, ...] | None = None) -> ControlResult:
    """Multinomial logistic regression on the raw features of the labelled subset (its
    modality's: standardised pixels for images, TF-IDF for text); C is chosen by validation
    accuracy among ``c_values`` (default: the modality's; the first value when there is no
    validation split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if data.test is None:
        raise ValueError("controls: the raw-feature baseline needs a test split (finetune.test)")
    start = time.perf_counter()
    modality = get_modality(data.modality)
    c_values = tuple(c_values or modality.raw_c_values)
    train, y = labelled_at_test_size(data), data.train[1]

    def fit(c: float):
        return make_pipeline(*modality.raw_feature_steps(), LogisticRegression(C=c, max_iter=2000)).fit(train, y)

    scored = []
    for c in c_values if data.val is not None else c_values[:1]:
        model = fit(c)
        val = float(model.score(data.val[0], data.val[1])) if data.val is not None else None
        scored.append((val if val is not None else 0.0, c, model, val))
    _, c, model, val = max(scored, key=lambda s: (s[0], -s[1]))  # ties: the stronger regularisation
    predictions = model.predict(data.test[0])
    return ControlResult(f"logistic regression on {modality.raw_features_name}", val,
                         float(np.mean(predictions == data.test[1])), predictions, time.perf_counter() - start,
                         {"C": c})


@torch.no_grad()
def embed(encoder: torch.nn.Module, values: np.ndarray, cfg: FinetuneConfig, batch_size: int = 512) -> torch.Tensor:
    """Values of ``cfg.modality`` (images: uint8 [N, H, W, C]) -> L2-normalised features [N, D]
    of an encoder in eval mode."""
    encoder.eval()
    modality = get_modality(cfg.modality)
    out = [encoder.forward_features(modality.to_tensor(values[lo:lo + batch_size], cfg.mean, cfg.std))
           for lo in range(0, len(values), batch_size)]
    return F.normalize(torch.cat(out).float(), dim=1)


def weighted_knn(train: torch.Tensor, train_labels: np.ndarray, query: torch.Tensor, num_classes: int,
                 k: int = 20, temperature: float = 0.07) -> np.ndarray:
    """Weighted kNN on cosine similarity (Wu et al. 2018, the instance-discrimination evaluation):
    each of the k nearest training embeddings votes for its class with exp(similarity / T).
    train: [N, D], query: [M, D] (both L2-normalised) -> predicted classes [M]."""
    k = min(k, len(train))
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    predictions = []
    for lo in range(0, len(query), 1024):
        similarity, index = (query[lo:lo + 1024] @ train.T).topk(k, dim=1)  # [B, k]
        votes = torch.zeros(len(index), num_classes).scatter_add_(1, labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions).numpy()


def knn_of_checkpoint(data: FinetuneData, cfg: FinetuneConfig, checkpoint: str, k: int = 20,
                      temperature: float = 0.07) -> ControlResult:
    """The pretrained encoder, frozen, as a weighted kNN over the labelled subset's embeddings."""
    if data.test is None:
        raise ValueError("controls: the kNN control needs a test split (finetune.test)")
    start = time.perf_counter()
    encoder = load_encoder(checkpoint)
    bank = embed(encoder, labelled_at_test_size(data), cfg)

    def predict(images: np.ndarray) -> np.ndarray:
        return weighted_knn(bank, data.train[1], embed(encoder, images, cfg), data.num_classes, k, temperature)

    val = float(np.mean(predict(data.val[0]) == data.val[1])) if data.val is not None else None
    predictions = predict(data.test[0])
    return ControlResult(f"kNN of the checkpoint (k={k})", val, float(np.mean(predictions == data.test[1])),
                         predictions, time.perf_counter() - start, {"k": k, "temperature": temperature})
