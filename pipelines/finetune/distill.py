"""Distillation through unlabelled data: a student trained on a fine-tuned teacher's soft
predictions over the whole unlabelled pool (the third step of SimCLRv2, Chen et al. 2020, "Big
Self-Supervised Models are Strong Semi-Supervised Learners"; with the student noised by the
augmentation policy while the teacher sees clean inputs, as in Noisy Student, Xie et al. 2020).

    teachers = [load_classifier(...)]                           # one or more fine-tunes (an ensemble)
    paths = prepare_student_data(dcfg, cfg, paths, teachers, out_dir)   # driver, once
    run_finetune(student_cfg, paths, checkpoint, policy, ...)   # the student: an ordinary fine-tune

The student's training set is the pool minus the validation subset (which stays an honest
selection signal) and never a sample of the test split: the labelled subset with its true labels
(one-hot), every other sample with the teachers' mean probability at ``temperature``. It is
written once as ``student.npz`` (values and targets) beside the subsets; the student itself is a
fine-tune whose labels are distributions (``FinetuneSession`` trains on either).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from augtrain.pipelines import console
from augtrain.pipelines.data import storage
from augtrain.pipelines.finetune.config import DistillConfig, FinetuneConfig
from augtrain.pipelines.finetune.data import DataPaths
from augtrain.pipelines.finetune.saved import SavedClassifier, check_same_data, mean_probabilities
from augtrain.pipelines.finetune.unlabelled import held_out_keys, pool_values
from augtrain.pipelines.modalities import get_modality

STUDENT_DATA = "student.npz"


def check_teachers(teachers: list[SavedClassifier]) -> None:
    """Teachers of one student must share the labelled and validation subsets and the classes."""
    if not teachers:
        raise ValueError("distill: no teacher given (--teacher)")
    check_same_data(teachers, "distill: the teachers")


def prepare_student_data(dcfg: DistillConfig, cfg: FinetuneConfig, paths: DataPaths, teachers: list[SavedClassifier],
                         out_dir: str) -> tuple[DataPaths, dict[str, Any]]:
    """Write the student's training set (``student.npz``: values, and targets [N, classes]) under
    ``out_dir`` and return the student's ``DataPaths`` and a record of what went in (counts,
    teachers' agreement with the labelled subset). Reused when present for the same request."""
    from augtrain.pipelines.finetune.subsets import load_arrays

    out = Path(out_dir).absolute()  # Ray Train workers read it from their own working directories
    request = {"teachers": sorted(t.weights for t in teachers), "temperature": dcfg.temperature,
               "pool": cfg.train, "labelled": paths.labelled, "val": paths.val}
    record_file = out / "student.json"
    if record_file.is_file() and (out / STUDENT_DATA).is_file():
        record = json.loads(record_file.read_text())
        if record.get("request") == request:
            return replace(paths, train_targets=str(out / STUDENT_DATA),
                           num_labelled=record["labelled"] + record["unlabelled"]), record
    held_out, subsets = held_out_keys(paths.labelled)
    console.say(f"distill: reading the pool {cfg.train} (less {len(subsets['val_keys'])} validation and "
                f"{len(subsets['labelled_keys'])} labelled samples)")
    values, _, skipped = pool_values(cfg.train, cfg.channels, cfg.modality, held_out)
    modality = get_modality(cfg.modality)
    labelled, labels, _ = load_arrays(paths.labelled, cfg.channels, cfg.label_key, modality=cfg.modality)
    all_values = modality.stack([*labelled, *values], "distill")
    # one pass of each teacher over both parts: the pool's soft labels, and (argmax, which the
    # temperature does not move) the teachers' accuracy on the labelled subset
    all_probs = mean_probabilities(teachers, all_values, paths.num_classes, dcfg.temperature)
    probs = all_probs[len(labelled):]
    agreement = float((all_probs[:len(labelled)].argmax(1) == labels).mean())
    targets = np.concatenate([np.eye(paths.num_classes, dtype=np.float32)[labels], probs])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{STUDENT_DATA}.tmp.npz"
    np.savez(tmp, values=all_values, targets=targets)
    os.replace(tmp, out / STUDENT_DATA)
    record = {"request": request, "labelled": len(labelled), "unlabelled": len(values), "skipped": skipped,
              "teachers_train_acc": agreement,
              "pseudo_label_counts": np.bincount(probs.argmax(1), minlength=paths.num_classes).tolist(),
              "mean_confidence": float(probs.max(1).mean())}
    storage.write_text_atomic(record_file, json.dumps(record, indent=1) + "\n")
    return replace(paths, train_targets=str(out / STUDENT_DATA), num_labelled=len(all_values)), record


def student_config(dcfg: DistillConfig, teacher: FinetuneConfig, n: int) -> FinetuneConfig:
    """The student's fine-tune config: the (first) teacher's, with the distill section's
    schedule, batch, optimizer, noise and seed, its length fixed for ``n`` training samples."""
    mode = "scratch" if dcfg.init == "scratch" else "full"
    updates: dict[str, Any] = {"mode": mode, "steps": dcfg.steps, "epochs": None, "batch_size": dcfg.batch_size,
                               "label_smoothing": dcfg.label_smoothing, "validate_every": "auto",
                               # the pool's soft labels replace generated samples and pseudo-labels
                               "synthetic_fraction": 0.0, "unlabelled": {"method": "none"}}
    for key in ("lr", "weight_decay", "policy", "seed", "workers"):
        if getattr(dcfg, key) is not None:
            updates[key] = getattr(dcfg, key)
    return teacher.with_updates(**updates).for_labelled(n)
