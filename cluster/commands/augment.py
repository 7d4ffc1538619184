"""``augtrain augment preview|list``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("augment", help="preview and list augmentation policies",
                            description="Look at what an augmentation policy does, and list ops and policies.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    preview = actions.add_parser("preview", help="write a PNG grid of originals and augmented samples",
                                 description="Read the first N images of the shards and write a grid: each original "
                                             "(framed) followed by augmented views drawn from the policy.")
    preview.add_argument("--policy", required=True,
                         help="policy spec: none, basic, mae, simclr, rand-n2-m9, trivialaugment, autoaugment-imagenet, "
                              "autoaugment-cifar10, pba, A+B, the pre=...|choices=... form, or a JSON object")
    preview.add_argument("--shards", required=True, help="directory, manifest.json, shard file, pattern or URL")
    preview.add_argument("--out", required=True, help="output PNG path")
    preview.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    preview.add_argument("--per-sample", type=int, default=4, help="augmented views per sample (default 4)")
    preview.add_argument("--size", type=int, default=None, help="output size of the transform (default: input size)")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--backend", default="auto", choices=["auto", "albumentations", "numpy", "dali"])
    preview.set_defaults(func=_preview)

    listing = actions.add_parser("list", help="list registered ops and standard policies")
    listing.set_defaults(func=_list)


def _preview(args: argparse.Namespace) -> int:
    from augtrain.augment.image.preview import render_preview, write_png
    from augtrain.pipelines.data.decode import first_values

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    images = first_values(args.shards, args.n, "image")
    if not images:
        raise ValueError(f"{args.shards}: no decodable images found")
    grid = render_preview(images, args.policy, size=args.size, per_sample=args.per_sample, seed=args.seed,
                          backend=args.backend)
    write_png(args.out, grid)
    print(f"wrote {args.out}: {len(images)} samples x {args.per_sample} views ({grid.shape[1]}x{grid.shape[0]} px)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from augtrain.augment import list_ops, list_policies

    print("ops:      " + ", ".join(list_ops()))
    print("policies: " + ", ".join(list_policies()) + ", rand-nN-mM")
    return 0
