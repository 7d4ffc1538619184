"""``augtrain data stream``: one epoch of shards through Ray Data to N Ray Train workers."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="stream shards through Ray Data",
                            description="Data-path commands (Ray Data streaming, the input of training).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    stream = actions.add_parser("stream", help="stream one epoch to N Ray Train workers and summarise",
                                description="Stream one epoch of shards through Ray Data to N Ray Train workers, with "
                                            "each worker's own deterministic slice, and print what each saw.")
    stream.add_argument("shards", nargs="+", help="directory, manifest.json, shard file, pattern or URL")
    stream.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else an embedded local Ray)")
    stream.add_argument("--workers", type=int, default=2)
    stream.add_argument("--batch-size", type=int, default=256)
    stream.add_argument("--epoch", type=int, default=0)
    stream.add_argument("--seed", type=int, default=0)
    stream.add_argument("--policy", default=None, help="augmentation policy applied in the read tasks (e.g. mae, basic)")
    stream.add_argument("--size", type=int, default=None, help="output image size for the policy")
    stream.add_argument("--channels", type=int, default=None, choices=[1, 3], help="decode to 1 or 3 channels (default: as stored)")
    stream.add_argument("--modality", default=None, help="what the samples are (default: the manifest's, else image)")
    stream.add_argument("--strict", action="store_true", help="fail on the first bad sample (default: skip, count, report)")
    stream.add_argument("--json", action="store_true", help="print the summary as JSON")
    stream.set_defaults(func=_stream)


def build_reader(shards, seed: int, policy: str | None, size: int | None, channels: int | None, strict: bool,
                 modality: str | None = None):
    """Resolve shards and build the reader (with the policy's per-sample transform, if any).
    ``modality``: the samples' modality (default: the manifest's, else image); a manifest
    recording another one is refused."""
    from augtrain.pipelines.data.reader import ReaderConfig, ShardReader
    from augtrain.pipelines.data.shard_set import open_shards
    from augtrain.pipelines.modalities import DecodeSpec, get_modality

    shard_set = open_shards(shards, modality=modality)
    kind = get_modality(modality or (shard_set.manifest.modality if shard_set.manifest else "image"))
    transform = kind.sample_transform(policy, size=size, views=1) if policy else None
    config = ReaderConfig(seed=seed, strict=strict, decode=DecodeSpec(channels=channels, modality=kind.name))
    return ShardReader(shard_set, config, transform)


def _stream(args: argparse.Namespace) -> int:
    from augtrain.cluster.connect import check_spare_cpu, connect
    from augtrain.pipelines.data.stream_epoch import StreamOptions, stream_epoch

    reader = build_reader(args.shards, args.seed, args.policy, args.size, args.channels, args.strict, args.modality)
    print(f"{len(reader.shards.urls)} shards, {reader.shards.num_samples} samples; "
          f"streaming epoch {args.epoch} to {args.workers} workers")
    check_spare_cpu(args.workers, StreamOptions.cpus_per_worker, args.address, names="--workers x CPUs per worker")
    connect(args.address)
    summary = stream_epoch(reader, StreamOptions(workers=args.workers, batch_size=args.batch_size, epoch=args.epoch))
    if args.json:
        print(json.dumps({"epoch": summary.epoch, "samples": summary.samples, "seconds": summary.seconds,
                          "workers": summary.workers, "position": summary.position.state_dict()}, indent=2))
    else:
        print(summary.format(reader.shards.class_names))
    return 0
