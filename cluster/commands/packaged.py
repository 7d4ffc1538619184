"""``augtrain packaged``: a checkpoint of an encoder's packaged pretrained weights.

    augtrain packaged efficientnet-lite0 --set in_chans=1 --out runs/lite0-imagenet
    augtrain search -c configs/search-fmnist-lite0.yaml --checkpoint runs/lite0-imagenet

Transfer from existing weights as a pretraining step: the weights that an installed package ships
(EfficientNet-Lite0's ImageNet weights; nothing is downloaded) are written as a step-0 checkpoint,
which ``finetune``, ``search`` and ``distill`` take as ``--checkpoint``. Its scratch rows rebuild
the same architecture with fresh weights.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("packaged", help="write a checkpoint of an encoder's packaged pretrained weights",
                            description="Write a step-0 checkpoint of ENCODER with the pretrained weights its "
                                        "package ships, for finetune/search/distill --checkpoint.")
    parser.add_argument("encoder", help="a registered encoder with packaged weights (efficientnet-lite0)")
    parser.add_argument("--set", dest="kwargs", action="append", default=[], metavar="KEY=VALUE",
                        help="an encoder argument (YAML value), e.g. in_chans=1 (repeatable)")
    parser.add_argument("--out", required=True, help="checkpoint root (its step-00000000 and `latest`)")
    parser.set_defaults(func=_packaged)


def _packaged(args: argparse.Namespace) -> int:
    import yaml

    from augtrain.pipelines.train.checkpoint import save_packaged_checkpoint

    kwargs = {}
    for item in args.kwargs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        kwargs[key.strip()] = yaml.safe_load(value)
    path = save_packaged_checkpoint(args.encoder, args.out, **kwargs)
    print(f"{args.encoder}'s packaged weights: {path}")
    return 0
