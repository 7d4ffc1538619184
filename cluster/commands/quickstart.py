"""``augtrain quickstart``: the whole flow on an embedded local Ray, on real data.

Today: Fashion-MNIST (Debian's dataset-fashion-mnist) written as WebDataset shards, train
and test, then one epoch streamed through Ray Data to two Ray Train workers.
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("quickstart", help="run the main flow locally on Fashion-MNIST",
                            description="Write Fashion-MNIST shards (train and test) and stream one epoch through "
                                        "Ray Data to two Ray Train workers on an embedded local Ray.")
    parser.add_argument("--data", default="data", help="where shards are written (reused when present)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policy", default=None, help="augmentation policy applied while streaming")
    parser.set_defaults(func=_quickstart)


def _ensure_shards(root: str, split: str) -> str:
    from augtrain.pipelines.manifest import MANIFEST_NAME
    from augtrain.pipelines.shard_writer import WriteOptions, write_shards
    from augtrain.pipelines.sources import open_source

    out = os.path.join(root, "fashion-mnist", split)
    if os.path.exists(os.path.join(out, MANIFEST_NAME)):
        print(f"reusing {out}")
        return out
    manifest = write_shards(open_source("fashion-mnist", split), out, split, WriteOptions(samples_per_shard=2000))
    print(f"wrote {manifest.num_samples} {split} samples in {len(manifest.shards)} shards to {out}")
    return out


def _quickstart(args: argparse.Namespace) -> int:
    from augtrain.cluster.commands.data import build_reader
    from augtrain.cluster.connect import connect
    from augtrain.pipelines.stream_epoch import StreamOptions, stream_epoch

    train = _ensure_shards(args.data, "train")
    _ensure_shards(args.data, "test")
    reader = build_reader([train], seed=0, policy=args.policy, size=28 if args.policy else None, channels=1, strict=False)
    connect()
    print(f"streaming one epoch of {reader.shards.num_samples} samples to {args.workers} Ray Train workers")
    summary = stream_epoch(reader, StreamOptions(workers=args.workers, batch_size=256))
    print(summary.format(reader.shards.class_names))
    return 0
