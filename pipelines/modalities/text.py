"""The text modality: ``txt`` members (UTF-8) or ``json`` members (an object with a string
``text`` field) decoded to ``str``. Batches become UTF-8 byte ids (ByT5's token-free vocabulary,
Xue et al. 2022: byte value + 1, 0 pads), ``[B, L]`` with L the longest sample up to
``max_bytes`` (text encoders tokenize them with their own vocabulary, ``augtrain.models.text``);
the linear control reads TF-IDF of words and word pairs; ``raw_features`` (byte frequencies)
remain for callers that want a fixed-length vector without fitting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from augtrain.pipelines.modalities.base import DecodeSpec, Modality, SampleError, register_modality


class TextModality(Modality):
    name = "text"
    members = ("txt", "json")
    column = "text"
    raw_features_name = "TF-IDF of words and word pairs"
    mixable = False  # token ids: finetune.mixup mixes the encoder's features (mixup_at input is refused)
    formats = ("txt",)
    max_bytes = 1024

    def decode(self, ext: str, data: bytes, spec: DecodeSpec) -> str:
        if ext == "json":
            try:
                record = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SampleError("unreadable json", str(exc)) from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SampleError("no text field", "a json member needs an object with a string 'text' field")
            return record["text"]
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SampleError("undecodable text", str(exc)) from None

    def encode(self, value: str, fmt: str | None = None) -> tuple[str, bytes]:
        if fmt not in (None, "txt"):
            raise ValueError(f"text format must be 'txt', got {fmt!r}")
        return "txt", value.encode("utf-8")

    def describe_augmented(self, values: Sequence[str], policy: Any, *, per_sample: int = 4, seed: int = 0) -> str:
        """Originals and their augmented copies, one per line, with the ops each copy went through."""
        from augtrain.augment import augment_rng
        from augtrain.augment.plan import apply_plan

        parsed = self.parse_policy(policy)
        rng = augment_rng(seed, 0)
        lines = [f"policy {parsed.to_string()}" + (f" ({parsed.copies} copies of each text beside it in training)"
                                                    if parsed.copies else "")]
        for i, text in enumerate(values):
            lines.append(f"\n[{i}] original : {text}")
            for k in range(per_sample):
                out, names = apply_plan(parsed, text, rng)
                lines.append(f"    copy {k + 1}   : {out}    <- {' + '.join(names) or 'unchanged'}")
        return "\n".join(lines)

    def stack(self, values: list[Any], where: str) -> np.ndarray:
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out

    def byte_ids(self, column: Sequence[str]) -> np.ndarray:
        """Strings -> int64 [B, L] byte ids (byte + 1; 0 pads), truncated at ``max_bytes``."""
        encoded = [s.encode("utf-8")[: self.max_bytes] for s in column]
        ids = np.zeros((len(encoded), max(1, max((len(b) for b in encoded), default=1))), dtype=np.int64)
        for i, b in enumerate(encoded):
            ids[i, : len(b)] = np.frombuffer(b, dtype=np.uint8).astype(np.int64) + 1
        return ids

    def to_tensor(self, column: np.ndarray, mean: Sequence[float], std: Sequence[float]):
        """Strings -> int64 [B, L] byte ids (``mean`` and ``std`` do not apply to ids)."""
        import torch

        return torch.as_tensor(self.byte_ids(column))

    raw_c_values = (0.1, 1.0, 10.0, 100.0)

    def raw_feature_steps(self) -> list[Any]:
        """TF-IDF of words and word pairs (sublinear term frequency) fitted on the labelled texts:
        the bag-of-words floor every text model must beat."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        return [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)]

    def raw_features(self, values: np.ndarray) -> np.ndarray:
        """Strings -> float32 [N, 256]: the frequency of each byte value in each sample."""
        out = np.zeros((len(values), 256), dtype=np.float32)
        for i, s in enumerate(values):
            b = np.frombuffer(s.encode("utf-8"), dtype=np.uint8)
            if len(b):
                out[i] = np.bincount(b, minlength=256) / len(b)
        return out


TEXT = register_modality(TextModality())
