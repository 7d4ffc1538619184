"""A Ray Data datasource that reads WebDataset shard pieces in a fixed order.

One read task per piece (a range of one shard's samples in that shard's epoch order): the
task reads the shard, decodes the samples of its range through their modality, runs the
sample transform on the decoded value (decode and augmentation fused in the read task: no
object-store hop between them) and yields Arrow blocks. A sample that cannot be used becomes
a row with ``__error__`` set, so that the consumer, which sees rows in order, can count and
report it exactly; in strict mode the task raises ``BadSampleError`` naming shard and key
instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from augtrain.pipelines.data import storage
from augtrain.pipelines.data.bad_data import BadSampleError
from augtrain.pipelines.data.decode import DecodeSpec, SampleError, decode_sample
from augtrain.pipelines.data.partition import Piece, sample_order
from augtrain.pipelines.data.wds_format import RawSample, iter_raw_samples
from augtrain.pipelines.modalities import Modality, SampleTransform

META_COLUMNS = ("__index__", "__key__", "__shard__", "__error__")


@dataclass(frozen=True)
class PieceReadSpec:
    """Everything a read task needs besides the piece itself (shipped once per task)."""

    seed: int
    epoch: int
    shuffle: bool
    decode: DecodeSpec
    transform: SampleTransform | None  # runs on the modality's column of each decoded sample
    strict: bool
    block_rows: int
    modality: Modality  # the object itself: unpickling it in a worker imports (registers) a plug-in


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample's augmentation: a function of (seed, epoch, position) only,
    so a sample is augmented the same way whichever worker reads it."""
    return np.random.default_rng([seed, epoch, index, 0xA06])


def read_piece(url: str, shard_name: str, expected: int, piece: Piece, spec: PieceReadSpec) -> Iterator[dict]:
    """Yield column batches (dicts of numpy arrays) for one piece, rows in epoch order."""
    with storage.open_binary(url) as f:
        samples = list(iter_raw_samples(f))
    order = sample_order(expected, spec.seed, spec.epoch, piece.shard, spec.shuffle)
    rows: list[dict] = []
    if piece.start == 0 and len(samples) > expected:
        extra = len(samples) - expected
        rows.append(_error_row(piece.global_start, f"<{extra} extra samples>", shard_name,
                               "shard has more samples than listed", f"{len(samples)} found, {expected} listed; extras not read"))
    for j in range(piece.start, piece.end):
        index = piece.global_start + (j - piece.start)
        position = int(order[j])
        raw = samples[position] if position < len(samples) else RawSample(
            key=f"<sample {position} missing>", error=f"shard has {len(samples)} samples, {expected} listed")
        rows.append(_row(raw, index, shard_name, spec))
        if len(rows) >= spec.block_rows:
            yield _to_batch(rows)
            rows = []
    if rows:
        yield _to_batch(rows)


def _row(raw: RawSample, index: int, shard_name: str, spec: PieceReadSpec) -> dict:
    try:
        out = decode_sample(raw, spec.decode, spec.modality)
        column = spec.modality.column
        if spec.transform is not None and column in out:
            out.update(spec.transform(out.pop(column), sample_rng(spec.seed, spec.epoch, index)))
    except SampleError as exc:
        if spec.strict:
            raise BadSampleError(shard_name, raw.key, str(exc)) from None
        return _error_row(index, raw.key, shard_name, exc.reason, exc.detail)
    out.update({"__index__": index, "__key__": raw.key, "__shard__": shard_name, "__error__": ""})
    return out


def _error_row(index: int, key: str, shard_name: str, reason: str, detail: str) -> dict:
    return {"__index__": index, "__key__": key, "__shard__": shard_name, "__error__": f"{reason}\t{detail}"}


def _to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows -> columns. Error rows get empty placeholders in data columns."""
    batch: dict[str, np.ndarray] = {
        "__index__": np.array([r["__index__"] for r in rows], dtype=np.int64),
        "__key__": np.array([r["__key__"] for r in rows], dtype=object),
        "__shard__": np.array([r["__shard__"] for r in rows], dtype=object),
        "__error__": np.array([r["__error__"] for r in rows], dtype=object),
    }
    names = []
    for r in rows:
        names += [k for k in r if k not in META_COLUMNS and k not in names]
    for name in names:
        values = [r.get(name) for r in rows]
        batch[name] = _column(values)
    return batch


def _column(values: list) -> np.ndarray:
    present = [v for v in values if v is not None]
    first = present[0]
    if isinstance(first, (int, np.integer)):
        return np.array([-1 if v is None else v for v in values], dtype=np.int64)
    if isinstance(first, (str, bytes)):
        empty = type(first)()
        out = np.empty(len(values), dtype=object)
        out[:] = [empty if v is None else v for v in values]
        return out
    shapes = {v.shape for v in present}
    if len(shapes) == 1:
        filler = np.zeros_like(first)
        return np.stack([filler if v is None else v for v in values])
    out = np.empty(len(values), dtype=object)
    out[:] = [np.zeros((0,) * first.ndim, first.dtype) if v is None else v for v in values]
    return out


def make_datasource(urls: list[str], names: list[str], counts: list[int], pieces: list[Piece], spec: PieceReadSpec):
    """A ``ray.data.Datasource`` with one read task per piece, in piece order."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockAccessor, BlockMetadata

    class WebDatasetPiecesDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
            tasks = []
            for piece in pieces:
                url, name, count = urls[piece.shard], names[piece.shard], counts[piece.shard]

                def read_fn(url=url, name=name, count=count, piece=piece):
                    for batch in read_piece(url, name, count, piece, spec):
                        yield BlockAccessor.batch_to_block(batch)

                meta = BlockMetadata(num_rows=piece.end - piece.start, size_bytes=None, input_files=[url], exec_stats=None)
                tasks.append(ReadTask(read_fn, meta))
            return tasks

    return WebDatasetPiecesDatasource()
