"""Generated samples as shards: a generative checkpoint's draws, class-conditional (a class prior
fitted to labelled images: the label is the class drawn), pseudo-labelled by a classifier (with
its confidence) or unlabelled, written with their provenance in the manifest (``synthetic``) so
that no split a model is judged on can hold them; a classifier trained on real images measures
their label fidelity.

    source, record = generated_source("runs/fmnist-vae/checkpoints", n=10_000, seed=0,
                                      labeller="runs/ft-s0", min_confidence=0.9)
    source, record = generated_source("runs/fmnist-vae/checkpoints", n=10_000,
                                      condition_on="runs/ft-s0/data/labelled", judge="runs/ft-all")
    source, record = generated_source("runs/fmnist-cvae-100/checkpoints", n=10_000)  # a cvae: labelled by its decoder
    write_shards(source, "data/fmnist-vae-gen", "train", WriteOptions(), synthetic=record)

Each labelled sample carries its label (``.cls``) and the labeller's confidence in it (``.conf``,
the classifier's softmax probability); samples below ``min_confidence`` are dropped and counted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from augtrain.pipelines.data.source_base import Source, SourceError
from augtrain.pipelines.train.checkpoint import load_model, read_metadata, resolve_checkpoint
from augtrain.pipelines.train.samples import to_uint8


def _normalisation(checkpoint: Path) -> tuple[list[float], list[float]]:
    """The mean and std the generative model was trained with (its experiment's ``loop``)."""
    config = read_metadata(checkpoint).get("config") or {}
    loop = config.get("loop") or {}
    if "mean" not in loop or "std" not in loop:
        raise ValueError(f"{checkpoint}: its config records no loop.mean/loop.std, so its samples cannot be "
                         "turned back into pixels")
    return list(loop["mean"]), list(loop["std"])


def _channels(checkpoint: Path, mean: list[float]) -> int:
    """The image channels the generative model was trained on (its experiment's ``data.channels``;
    else one per normalisation entry)."""
    config = read_metadata(checkpoint).get("config") or {}
    return int((config.get("data") or {}).get("channels") or len(mean))


class _Generator(NamedTuple):
    path: Path
    model: torch.nn.Module  # eval mode; it samples
    mean: list[float]  # the normalisation it was trained with
    std: list[float]

    @property
    def conditional(self) -> bool:
        """Whether it decodes a given class (a ``cvae``) and so labels its samples itself."""
        return hasattr(self.model, "sample_labelled")


def _generator_model(checkpoint: str | os.PathLike | _Generator) -> _Generator:
    """The checkpoint's path, its model (eval mode; it must sample) and its normalisation (an
    already loaded one is passed through)."""
    if isinstance(checkpoint, _Generator):
        return checkpoint
    path = resolve_checkpoint(checkpoint)
    model = load_model(path).eval()
    if not hasattr(model, "sample"):
        raise ValueError(f"{path}: a {type(model).__name__} checkpoint cannot generate samples (no sample(); "
                         "pretrain a generative objective such as 'vae')")
    mean, std = _normalisation(path)
    return _Generator(path, model, mean, std)


def draw(checkpoint: str | os.PathLike | _Generator, n: int, seed: int = 0, batch_size: int = 512) -> np.ndarray:
    """``n`` images (uint8 [N, H, W, C]) from a generative checkpoint's prior, reproducible for ``seed``."""
    _, model, mean, std = _generator_model(checkpoint)
    generator = torch.Generator().manual_seed(seed)
    chunks = [to_uint8(model.sample(min(batch_size, n - lo), generator=generator), mean, std)
              for lo in range(0, n, batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 1, 1, 1), np.uint8)


def fit_class_prior(model: torch.nn.Module, labelled: str | list[str], mean: list[float], std: list[float],
                    channels: int) -> tuple[Any, list[str]]:
    """The model's ``ClassPrior`` fitted to the labelled images of ``labelled`` (shards, such as a
    fine-tune's ``data/labelled`` subset; read with ``channels`` channels at the model's side and
    normalised with ``mean``/``std``, as in training), and their class names."""
    from augtrain.pipelines.finetune.subsets import load_arrays
    from augtrain.pipelines.modalities import get_modality

    if not hasattr(model, "fit_class_prior"):
        raise ValueError(f"a {type(model).__name__} cannot draw class-conditional samples (no fit_class_prior)")
    size = getattr(model, "image_size", None)  # the side the model generates and encodes
    values, labels, names = load_arrays(labelled, channels=channels, size=size)
    names = list(names or [str(c) for c in range(int(labels.max()) + 1)])
    x = get_modality("image").to_tensor(values, tuple(mean), tuple(std))
    try:
        return model.fit_class_prior(x, torch.from_numpy(labels), len(names)), names
    except ValueError as exc:
        raise SourceError(f"{labelled}: {exc}") from None


def draw_classes(checkpoint: str | os.PathLike | _Generator, labelled: str | list[str], n: int, seed: int = 0,
                 temperature: float = 1.0, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray, Any, list[str]]:
    """``n`` class-conditional images (uint8 [N, H, W, C]), as many of each class as ``n`` allows
    (the first ``n % classes`` classes one more), from the checkpoint's ``ClassPrior`` fitted to
    the images of ``labelled``; their labels int64 [N], the prior and the class names.
    Reproducible for ``seed``."""
    path, model, mean, std = _generator_model(checkpoint)
    prior, names = fit_class_prior(model, labelled, mean, std, _channels(path, mean))
    generator = torch.Generator().manual_seed(seed)
    labels = _balanced_labels(n, prior.num_classes, generator)
    chunks = [to_uint8(model.sample_classes(torch.from_numpy(labels[lo:lo + batch_size]), prior, generator,
                                            temperature), mean, std) for lo in range(0, n, batch_size)]
    return np.concatenate(chunks), labels, prior, names


def _balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> np.ndarray:
    """``n`` labels, as many of each class as ``n`` allows (the first ``n % num_classes`` one more),
    in a seeded order (classes interleaved, not in blocks)."""
    labels = np.arange(n, dtype=np.int64) % num_classes
    return labels[torch.randperm(n, generator=generator).numpy()]


def draw_labelled(checkpoint: str | os.PathLike | _Generator, n: int, seed: int = 0, temperature: float = 1.0,
                  batch_size: int = 512) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` images (uint8 [N, H, W, C]) from a conditional generative checkpoint (a ``cvae``), as
    many of each class as ``n`` allows, each decoded from a prior draw (its standard deviation
    ``temperature``) with its class; their labels int64 [N] and the class names of the shards it
    was trained on. Reproducible for ``seed``."""
    path, model, mean, std = _generator_model(checkpoint)
    if not hasattr(model, "sample_labelled"):
        raise ValueError(f"{path}: a {type(model).__name__} is not class-conditional")
    generator = torch.Generator().manual_seed(seed)
    labels = _balanced_labels(n, model.num_classes, generator)
    chunks = [to_uint8(model.sample_labelled(torch.from_numpy(labels[lo:lo + batch_size]), generator, temperature),
                       mean, std) for lo in range(0, n, batch_size)]
    return np.concatenate(chunks), labels, _generator_class_names(path, model.num_classes)


def _generator_class_names(checkpoint: Path, num_classes: int) -> list[str]:
    """The class names of the labelled shards a conditional generator was trained on (its config's
    ``data.train``), or the class indices when those shards are gone or name none."""
    from augtrain.pipelines.data.shard_set import ShardSpecError, open_shards

    train = ((read_metadata(checkpoint).get("config") or {}).get("data") or {}).get("train")
    try:
        names = open_shards(train, modality="image").class_names if train else None
    except (ShardSpecError, OSError):
        names = None
    if names and len(names) == num_classes:
        return list(names)
    return [str(c) for c in range(num_classes)]


def _trained_class_names(teacher: Any) -> list[str] | None:
    """The class names of the shards a classifier (a ``saved.SavedClassifier``) was trained on."""
    from augtrain.pipelines.data.shard_set import open_shards

    return open_shards(teacher.cfg.train, modality="image").class_names if teacher.cfg.train else None


def _check_classes(option: str, classifier: str | os.PathLike, teacher: Any, class_names: list[str]) -> None:
    """A classifier that judges or filters samples must name their classes, in the same order."""
    trained = _trained_class_names(teacher)
    if trained is not None and list(trained) != list(class_names):
        raise SourceError(f"{option} {classifier}: its classes {list(trained)} are not the samples' "
                          f"{list(class_names)}")


def label_fidelity(judge: str | os.PathLike, images: np.ndarray, labels: np.ndarray, num_classes: int,
                   judge_checkpoint: str | None = None, class_names: list[str] | None = None) -> dict[str, Any]:
    """How often a real-data classifier (``judge``: a fine-tune output folder) agrees with the
    generated samples' labels, over all and per class, with the judge's own test accuracy."""
    from augtrain.pipelines.finetune.saved import load_classifier, mean_probabilities
    from augtrain.pipelines.finetune.run import per_class_accuracy

    teacher = load_classifier(judge, judge_checkpoint)
    if class_names is not None:
        _check_classes("--judge", judge, teacher, class_names)
    predicted = mean_probabilities([teacher], images, num_classes).argmax(1)
    return {"judge": str(Path(judge).absolute()), "judge_test_acc": teacher.test_acc,
            "label_fidelity": float((predicted == labels).mean()),
            "label_fidelity_per_class": per_class_accuracy(labels, predicted, num_classes)}


def generated_source(checkpoint: str | os.PathLike, n: int, seed: int = 0, labeller: str | None = None,
                     labeller_checkpoint: str | None = None, min_confidence: float = 0.0,
                     condition_on: str | list[str] | None = None, temperature: float = 1.0,
                     judge: str | None = None, judge_checkpoint: str | None = None, *,
                     filter_by: str | None = None, filter_checkpoint: str | None = None
                     ) -> tuple[Source, dict[str, Any]]:
    """The samples as a ``Source`` for ``write_shards`` and their provenance record (the manifest's
    ``synthetic``): generator checkpoint and step, seed, how they were labelled, counts.

    A class-conditional checkpoint (a ``cvae``) labels its samples itself (the class decoded, an
    equal share per class; ``temperature`` scales its prior). For an unconditional one, labels
    come either from ``condition_on`` (labelled shards: class-conditional draws, the label is the
    class drawn) or from ``labeller`` (a classifier's pseudo-labels with its confidence, filtered
    by ``min_confidence``); neither: unlabelled samples. ``filter_by``, a classifier, keeps only
    the class-conditional samples it assigns to their class (with probability >= ``min_confidence``),
    the others dropped and counted. ``judge``, a classifier trained on real data, measures the
    labels' fidelity (recorded)."""
    if n < 1:
        raise SourceError(f"generate: --n must be >= 1, got {n}")
    if not 0.0 <= min_confidence < 1.0:
        raise SourceError(f"generate: --min-confidence must be in [0, 1), got {min_confidence}")
    if condition_on is not None and labeller is not None:
        raise SourceError("generate: --condition-on labels the samples by the class drawn; --labeller would "
                          "relabel them (use --judge to measure their label fidelity, --filter-by to keep those a "
                          "classifier agrees with)")
    if temperature <= 0:
        raise SourceError(f"generate: --temperature must be > 0, got {temperature}")
    source = _generator_model(checkpoint)  # loaded once, for every draw below
    path, conditional = source.path, source.conditional
    if conditional and (condition_on is not None or labeller is not None):
        raise SourceError(f"generate: {path} is a class-conditional model (its decoder is given each sample's "
                          "class, the label); --condition-on and --labeller are for an unconditional one")
    classed = conditional or condition_on is not None  # labelled by the class drawn
    if not conditional and condition_on is None and temperature != 1.0:
        raise SourceError("generate: --temperature scales the class Gaussians of --condition-on (or a conditional "
                          "model's prior); without it the samples come from the standard-normal prior")
    if filter_by is not None and not classed:
        raise SourceError("generate: --filter-by keeps the class-conditional samples a classifier agrees with: "
                          "it needs a conditional checkpoint or --condition-on"
                          + (" (--labeller's pseudo-labels are its own classes)" if labeller else ""))
    if labeller is None and filter_by is None and min_confidence > 0:
        raise SourceError("generate: --min-confidence filters a --labeller's pseudo-labels or the samples "
                          "--filter-by keeps; " + ("class-conditional samples have no confidence of their own"
                                                   if classed else "there is none"))
    if judge is not None and not classed and labeller is None:
        raise SourceError("generate: --judge measures the fidelity of labels; unlabelled samples have none")
    record: dict[str, Any] = {"generator": str(path), "generator_step": read_metadata(path).get("step"),
                              "seed": seed, "drawn": n, "labeller": None}
    if classed:
        if conditional:
            images, labels, class_names = draw_labelled(source, n, seed, temperature)
            record.update({"labeller": "conditional decoder", "temperature": temperature})
        else:
            images, labels, prior, class_names = draw_classes(source, condition_on, n, seed, temperature)
            record.update({"labeller": "class-conditional", "conditioned_on": _absolute(condition_on),
                           "temperature": temperature, "class_prior": prior.to_dict()})
        if filter_by is not None:
            images, labels = _agreed(filter_by, filter_checkpoint, images, labels, class_names, min_confidence,
                                     record)
        record.update({"kept": len(labels), "per_class": np.bincount(labels, minlength=len(class_names)).tolist()})
        if judge is not None:
            record.update(label_fidelity(judge, images, labels, len(class_names), judge_checkpoint, class_names))
        return Source("generated", list(class_names), len(labels),
                      lambda i: (_squeeze(images[i]), int(labels[i]))), record
    images = draw(source, n, seed)
    if labeller is None:
        record["kept"] = n
        return Source("generated", [], n, lambda i: (_squeeze(images[i]), None)), record
    from augtrain.pipelines.finetune.saved import load_classifier, mean_probabilities

    teacher = load_classifier(labeller, labeller_checkpoint)
    class_names = _trained_class_names(teacher)
    if not class_names:
        raise SourceError(f"{labeller}: the labeller's training shards ({teacher.cfg.train}) record no class names")
    num_classes = len(class_names)
    probs = mean_probabilities([teacher], images, num_classes)
    labels, confidence = probs.argmax(1), probs.max(1)
    kept = np.flatnonzero(confidence >= min_confidence)
    record.update({"labeller": str(Path(labeller).absolute()), "labeller_test_acc": teacher.test_acc,
                   "min_confidence": min_confidence, "kept": int(len(kept)), "dropped_below_confidence":
                   int(n - len(kept)), "mean_confidence": float(confidence[kept].mean()) if len(kept) else None,
                   "per_class": np.bincount(labels[kept], minlength=num_classes).tolist()})
    if not len(kept):
        raise SourceError(f"generate: no sample reached --min-confidence {min_confidence} "
                          f"(the best had {confidence.max():.3f})")
    if judge is not None:
        record.update(label_fidelity(judge, images[kept], labels[kept], num_classes, judge_checkpoint, class_names))
    return Source("generated", list(class_names), len(kept),
                  lambda i: (_squeeze(images[kept[i]]), int(labels[kept[i]])),
                  extras=lambda i: {"conf": f"{confidence[kept[i]]:.6f}".encode()}), record


def _agreed(classifier: str, classifier_checkpoint: str | None, images: np.ndarray, labels: np.ndarray,
            class_names: list[str], min_confidence: float, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The samples whose label is ``classifier``'s most probable class, with probability >=
    ``min_confidence``; what it kept and dropped goes into ``record``."""
    from augtrain.pipelines.finetune.saved import load_classifier, mean_probabilities

    teacher = load_classifier(classifier, classifier_checkpoint)
    _check_classes("--filter-by", classifier, teacher, class_names)
    probs = mean_probabilities([teacher], images, len(class_names))
    kept = np.flatnonzero((probs.argmax(1) == labels) & (probs.max(1) >= min_confidence))
    record.update({"filtered_by": str(Path(classifier).absolute()), "filter_test_acc": teacher.test_acc,
                   "min_confidence": min_confidence, "dropped_by_filter": int(len(labels) - len(kept)),
                   "dropped_by_filter_per_class": (np.bincount(labels, minlength=len(class_names))
                                                   - np.bincount(labels[kept], minlength=len(class_names))).tolist()})
    if not len(kept):
        raise SourceError(f"generate: --filter-by {classifier} agrees with none of the {len(labels)} samples")
    return images[kept], labels[kept]


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int = 10) -> np.ndarray:
    """The first ``per_class`` images of each class (uint8 [N, H, W, C]) as one RGB grid, a row per
    class (short rows padded white)."""
    from augtrain.pipelines.train.samples import grid

    h, w, c = images.shape[1:]
    tiles = np.full((num_classes * per_class, h, w, c), 255, np.uint8)
    for k in range(num_classes):
        rows = np.flatnonzero(labels == k)[:per_class]
        tiles[k * per_class:k * per_class + len(rows)] = images[rows]
    picture = grid(tiles, columns=per_class)
    return np.repeat(picture, 3, axis=2) if picture.shape[-1] == 1 else picture


def _absolute(spec: str | list[str]) -> str | list[str]:
    return [str(Path(s).absolute()) for s in spec] if isinstance(spec, list) else str(Path(spec).absolute())


def _squeeze(image: np.ndarray) -> np.ndarray:
    """[H, W, 1] -> [H, W] (a grayscale source's images); RGB kept."""
    return image[..., 0] if image.shape[-1] == 1 else image
