"""``augtrain tokenizer train``: a WordPiece vocabulary trained on text shards, saved as a folder
that text encoders (``model.encoder_kwargs.tokenizer``) and transformers load."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tokenizer", help="train a WordPiece tokenizer on text shards",
                            description="Train and save tokenizers for the text modality.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="train a WordPiece vocabulary on text shards",
                               description="Train a WordPiece vocabulary (BERT's uncased normalisation) on every text of "
                                           "the given shard sets and save it as a folder transformers loads.")
    train.add_argument("--data", nargs="+", required=True, help="text shard sets (directory, manifest, tar, pattern)")
    train.add_argument("--out", required=True, help="the tokenizer folder to write")
    train.add_argument("--vocab-size", type=int, default=8000)
    train.add_argument("--min-frequency", type=int, default=2)
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from augtrain.pipelines.data.tokenizer import load_tokenizer, train_wordpiece_on_shards

    folder, count = train_wordpiece_on_shards(args.data, args.out, vocab_size=args.vocab_size,
                                              min_frequency=args.min_frequency)
    print(f"tokenizer: {len(load_tokenizer(folder))} tokens trained on {count} texts, saved in {folder}")
    return 0
