"""Turn a raw WebDataset sample into arrays through its modality, or say precisely why it cannot
be used."""

from __future__ import annotations

from typing import Any, Sequence

from augtrain.pipelines.data import storage
from augtrain.pipelines.data.shard_set import open_shards
from augtrain.pipelines.data.wds_format import RawSample, iter_raw_samples
from augtrain.pipelines.modalities import DecodeSpec, Modality, SampleError, get_modality

__all__ = ["DecodeSpec", "SampleError", "decode_sample", "first_values", "parse_label"]


def parse_label(data: bytes) -> int:
    text = data.decode("ascii", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise SampleError("non-integer label", repr(text[:20])) from None


def decode_sample(raw: RawSample, spec: DecodeSpec, modality: Modality | None = None) -> dict[str, object]:
    """Raw sample -> its modality's columns and ``"label"``: for images ``{"image": [H,W,C] uint8
    | "encoded": bytes, "label": int}``. ``modality`` defaults to the one ``spec`` names.

    Raises SampleError for a broken tar member, a sample without a member of the modality or
    one that does not decode, or a missing or non-integer label.
    """
    if raw.error is not None:
        raise SampleError("unreadable tar member", raw.error)
    out = (modality or get_modality(spec.modality)).decode_members(raw.members, spec)
    if spec.label_key is not None:
        if spec.label_key not in raw.members:
            raise SampleError("missing label", f"no .{spec.label_key} member")
        out["label"] = parse_label(raw.members[spec.label_key])
    return out


def first_values(spec: str | Sequence[str], n: int | None, modality: str) -> list[Any]:
    """The decoded values (as stored: no label, channels kept) of the first ``n`` good samples of
    the shards ``spec`` names (``None``: every good sample), read in order; fewer when the shards
    hold fewer."""
    kind = get_modality(modality)
    decode = DecodeSpec(label_key=None, channels=None, modality=kind.name)
    values: list[Any] = []
    for url in open_shards(spec, modality=kind.name).urls:
        with storage.open_binary(url) as f:
            for raw in iter_raw_samples(f):
                if raw.error is not None:
                    continue
                try:
                    values.append(kind.decode_members(raw.members, decode)[kind.column])
                except SampleError:
                    continue
                if len(values) == n:
                    return values
    return values
