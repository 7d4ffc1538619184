"""An ensemble of fine-tuned classifiers: the mean of their class probabilities, the way
InceptionTime averages five networks and Fawaz et al.'s neural network ensembles average FCN,
ResNet and others (Ismail Fawaz et al. 2019, "Deep Neural Network Ensembles for Time Series
Classification"). Members differ in architecture, seed or policy; they must have been fine-tuned
on the same labelled subset and classes, and they are tested on one held-out split.

    members = [load_classifier(d) for d in ("runs/ft-fcn", "runs/ft-resnet")]
    result = evaluate_ensemble(members)          # the members' test split, or split=...
    result["test_acc"], result["members"][0]["test_acc"]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from augtrain.pipelines.data.shard_set import open_shards
from augtrain.pipelines.finetune.run import per_class_accuracy
from augtrain.pipelines.finetune.saved import SAME_DATA, SavedClassifier, check_same_data, member_probabilities
from augtrain.pipelines.finetune.subsets import load_arrays

ENSEMBLE_FILE = "ensemble.json"


def check_members(members: list[SavedClassifier], split: str | list[str] | None = None) -> str | list[str]:
    """The split to test on (``split``, or the members' own test split), after checking that the
    members can be combined: the same data and classes, the same input channels, one test split."""
    if len(members) < 2:
        raise ValueError(f"ensemble: {len(members)} member given; an ensemble needs two or more (--member)")
    check_same_data(members, "ensemble: the members", SAME_DATA + ("channels",))
    counts = {m.num_classes for m in members}
    if len(counts) > 1:
        raise ValueError(f"ensemble: the members predict different numbers of classes {sorted(counts)}")
    if split is not None:
        return split
    tests = [m.cfg.test for m in members]
    if tests[0] is None:
        raise ValueError(f"ensemble: {members[0].path}: its fine-tune had no test split; name one (--test)")
    if any(t != tests[0] for t in tests[1:]):
        raise ValueError(f"ensemble: the members were tested on different splits {tests}; name one (--test)")
    return tests[0]


def combine(probabilities: list[np.ndarray]) -> np.ndarray:
    """The ensemble's class probabilities: the members' mean, [N, classes]."""
    return np.mean(np.stack(probabilities), axis=0)


def evaluate_ensemble(members: list[SavedClassifier], split: str | list[str] | None = None,
                      batch_size: int = 512) -> dict[str, Any]:
    """The ensemble's accuracy on ``split`` (default: the members' test split) beside each
    member's, with per-class accuracy and how often all members agree."""
    spec = check_members(members, split)
    cfg = members[0].cfg
    values, labels, _ = load_arrays(spec, cfg.channels, cfg.label_key, modality=cfg.modality)
    # load_arrays skips unreadable samples; the shard set's count says how many
    skipped = open_shards(spec, modality=cfg.modality).num_samples - len(labels)
    num_classes = members[0].num_classes
    if labels.max() >= num_classes:
        raise ValueError(f"ensemble: {spec} has label {int(labels.max())}, outside the members' "
                         f"{num_classes} classes")
    probs = member_probabilities(members, values, num_classes, batch_size)
    predicted = combine(probs).argmax(1)
    votes = np.stack([p.argmax(1) for p in probs])
    accs = [float((v == labels).mean()) for v in votes]
    return {"split": spec, "samples": int(len(labels)), "skipped": int(skipped), "test_acc": float((predicted == labels).mean()),
            "per_class_acc": per_class_accuracy(labels, predicted, num_classes),
            "members": [{"path": m.path, "encoder": m.cfg.encoder, "mode": m.cfg.mode, "seed": m.cfg.seed,
                         "pretrained": m.pretrained, "policy": m.source,
                         "test_acc": a, "recorded_test_acc": m.test_acc} for m, a in zip(members, accs)],
            "best_member_test_acc": max(accs), "mean_member_test_acc": float(np.mean(accs)),
            "agreement": float((votes == votes[0]).all(axis=0).mean())}
