"""``augtrain generate``: draw samples from a generative checkpoint and write them as shards.

    augtrain generate --checkpoint runs/fmnist-vae/checkpoints --n 10000 --out data/fmnist-vae-gen \\
        [--condition-on runs/ft-s0/data/labelled | --labeller runs/ft-s0 [--min-confidence 0.9]] \\
        [--judge runs/ft-all] [--seed 0]

With ``--condition-on`` (labelled shards, such as a fine-tune's labelled subset) the samples are
class-conditional: a Gaussian per class is fitted in the model's latent space to those images'
posteriors, an equal share of the samples is drawn from each, and each sample's label is its
class. With ``--labeller`` (an ``augtrain finetune`` output folder, or a fine-tune checkpoint with
``--labeller-checkpoint`` naming its pretraining checkpoint) every sample is pseudo-labelled with
the classifier's most probable class and its confidence (``<key>.conf``); samples below
``--min-confidence`` are dropped and counted. The manifest's ``synthetic`` field records the
provenance (generating checkpoint and step, seed, labeller, filter, counts); such shards are
refused as a validation or test split. ``--judge``, a fine-tune trained on real images, measures
the labels' fidelity: how often it agrees with them, over all and per class (recorded).

A class-conditional checkpoint (``model.objective: cvae``, trained with labels) labels its samples
itself: an equal share per class, each decoded from a prior draw with its class
(``--temperature`` scales the prior's standard deviation); ``--condition-on`` and ``--labeller``
are for unconditional models and refused with it.

``--filter-by`` (a fine-tune, such as one trained on the same labelled subset) keeps only the
class-conditional samples (either kind) that it assigns to their class, with probability at least
``--min-confidence``; the samples it drops are counted per class in the manifest.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="write samples of a generative checkpoint as shards (with provenance)",
                            description="Draw samples from a generative checkpoint (a VAE) and write them as "
                                        "shards: class-conditional (a cvae checkpoint, or --condition-on "
                                        "labelled shards for a vae), "
                                        "pseudo-labelled by a fine-tuned classifier (--labeller) or unlabelled.")
    parser.add_argument("--checkpoint", required=True, help="generative pretraining checkpoint (or its run's folder)")
    parser.add_argument("--n", type=int, required=True, help="samples to draw")
    parser.add_argument("--out", required=True, help="output folder for the shards and manifest.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labeller", default=None, help="a fine-tune output folder or checkpoint that labels them")
    parser.add_argument("--labeller-checkpoint", default=None,
                        help="the labeller's pretraining checkpoint, when --labeller is a bare fine-tune checkpoint")
    parser.add_argument("--min-confidence", type=float, default=0.0,
                        help="drop samples whose pseudo-label's (or, with --filter-by, their class's) probability is "
                             "below this (counted)")
    parser.add_argument("--condition-on", default=None, metavar="SHARDS",
                        help="labelled shards (e.g. a fine-tune's data/labelled): draw class-conditional samples "
                             "from a per-class Gaussian fitted to their latent posteriors, labelled by class")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="scale of the class Gaussians' standard deviations (--condition-on), or of a cvae's prior")
    parser.add_argument("--filter-by", default=None, metavar="FINETUNE",
                        help="a fine-tune output folder or checkpoint: keep only the class-conditional samples it "
                             "assigns to their class (with probability >= --min-confidence); the rest are counted")
    parser.add_argument("--filter-checkpoint", default=None,
                        help="the filter's pretraining checkpoint, when --filter-by is a bare fine-tune checkpoint")
    parser.add_argument("--judge", default=None,
                        help="a fine-tune output folder trained on real images: record how often it agrees with "
                             "the samples' labels (label fidelity, per class)")
    parser.add_argument("--judge-checkpoint", default=None,
                        help="the judge's pretraining checkpoint, when --judge is a bare fine-tune checkpoint")
    parser.add_argument("--samples-per-shard", type=int, default=2000)
    parser.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.generate import generated_source

    source, record = generated_source(args.checkpoint, args.n, args.seed, args.labeller, args.labeller_checkpoint,
                                      args.min_confidence, args.condition_on, args.temperature, args.judge,
                                      args.judge_checkpoint, filter_by=args.filter_by,
                                      filter_checkpoint=args.filter_checkpoint)
    manifest = write_shards(source, args.out, "train", WriteOptions(samples_per_shard=args.samples_per_shard),
                            synthetic=record)
    shown = {k: v for k, v in record.items() if k in ("drawn", "kept", "dropped_below_confidence", "dropped_by_filter",
                                                   "mean_confidence", "label_fidelity", "per_class")}
    print(f"wrote {manifest.num_samples} generated samples in {len(manifest.shards)} shards to {args.out}: "
          f"{json.dumps(shown, default=str)}")
    return 0
