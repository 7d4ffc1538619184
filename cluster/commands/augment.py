"""``augtrain augment preview|list``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("augment", help="preview and list augmentation policies",
                            description="Look at what an augmentation policy does, and list ops and policies.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    preview = actions.add_parser("preview", help="show originals beside augmented samples (a PNG grid, or text)",
                                 description="Read the first N samples of the shards and show each original followed by "
                                             "augmented views drawn from the policy: a PNG grid for images (the "
                                             "original framed), a PNG of curves for series (the original thick), "
                                             "the texts side by side for text, printed and, with --out, written.")
    preview.add_argument("--policy", required=True,
                         help="policy spec of the shards' modality: images: none, basic, mae, simclr, rand-n2-m9, "
                              "trivialaugment, autoaugment-imagenet, autoaugment-cifar10, pba, A+B; text: none, eda, "
                              "eda-m1-c16, aeda, text-trivialaugment; series: none, series-basic, series-m5-c1, "
                              "series-trivialaugment; the pre=...|choices=... form, or a JSON object")
    preview.add_argument("--shards", required=True, help="directory, manifest.json, shard file, pattern or URL")
    preview.add_argument("--out", default=None, help="output file (a PNG for images and series: required there)")
    preview.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    preview.add_argument("--per-sample", type=int, default=4, help="augmented views per sample (default 4)")
    preview.add_argument("--size", type=int, default=None, help="output size of the transform (default: input size)")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--backend", default="auto", choices=["auto", "albumentations", "numpy", "dali"])
    preview.set_defaults(func=_preview)

    listing = actions.add_parser("list", help="list registered ops and standard policies")
    listing.set_defaults(func=_list)


def _preview(args: argparse.Namespace) -> int:
    from augtrain.augment.image.preview import write_png
    from augtrain.pipelines.data.decode import first_values
    from augtrain.pipelines.data.shard_set import open_shards
    from augtrain.pipelines.modalities import get_modality

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    manifest = open_shards(args.shards).manifest
    modality = get_modality(manifest.modality if manifest is not None else "image")
    values = first_values(args.shards, args.n, modality.name)
    if not values:
        raise ValueError(f"{args.shards}: no decodable {modality.name} samples found")
    text = modality.describe_augmented(values, args.policy, per_sample=args.per_sample, seed=args.seed)
    if text is not None:
        print(text)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            print(f"\nwrote {args.out}")
        return 0
    if not args.out:
        raise ValueError(f"--out: a preview of {modality.name} samples is a PNG; name the file to write")
    grid = modality.preview(values, args.policy, size=args.size, per_sample=args.per_sample, seed=args.seed,
                            backend=args.backend)
    if grid is None:
        raise ValueError(f"augment preview: the {modality.name} modality has no picture or text form of its samples")
    write_png(args.out, grid)
    print(f"wrote {args.out}: {len(values)} samples x {args.per_sample} views ({grid.shape[1]}x{grid.shape[0]} px)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from augtrain.augment import list_ops, list_policies
    from augtrain.augment.registry import catalogue, list_catalogues

    for modality in list_catalogues():
        forms = catalogue(modality).spec_forms
        print(f"{modality}:\n  ops:      " + ", ".join(list_ops(modality)))
        print("  policies: " + ", ".join(list(list_policies(modality)) + list(forms)))
    return 0
