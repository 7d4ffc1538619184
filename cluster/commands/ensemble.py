"""``augtrain ensemble``: test an ensemble of fine-tunes (the mean of their class probabilities).

    augtrain finetune -c configs/series-finetune.yaml --mode scratch --set finetune.encoder=fcn --out runs/ft-fcn
    augtrain finetune -c configs/series-finetune.yaml --mode scratch --set finetune.encoder=resnet1d --out runs/ft-resnet
    augtrain ensemble --member runs/ft-fcn --member runs/ft-resnet --out runs/ens

Members are ``augtrain finetune`` output folders or fine-tune checkpoints (those fine-tuned from a
pretraining checkpoint need it: ``--checkpoint``). They must share the labelled subset and
classes; they may differ in architecture, seed and policy. The ensemble is tested on the members'
test split (or ``--test``) beside each member, and ``<out>/ensemble.json`` records it.
"""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ensemble", help="test an ensemble of fine-tunes (their mean class probability)",
                            description="Average the class probabilities of two or more fine-tuned classifiers "
                                        "and test the ensemble on a held-out split, beside each member.")
    parser.add_argument("--member", action="append", required=True, metavar="DIR",
                        help="an `augtrain finetune` output folder or a fine-tune checkpoint (repeatable)")
    parser.add_argument("--checkpoint", default=None,
                        help="the pretraining checkpoint of members given as fine-tune checkpoints (not "
                             "needed for output folders, which name theirs, or for members from scratch)")
    parser.add_argument("--test", default=None, help="shards to test on (default: the members' test split)")
    parser.add_argument("--out", default=None, help="folder for ensemble.json (default: print only)")
    parser.set_defaults(func=_ensemble)


def _ensemble(args: argparse.Namespace) -> int:
    from augtrain.pipelines.data.storage import write_text_atomic
    from augtrain.pipelines.finetune import resolve_checkpoint
    from augtrain.pipelines.finetune.ensemble import ENSEMBLE_FILE, evaluate_ensemble
    from augtrain.pipelines.finetune.saved import load_classifier

    pretrained = str(resolve_checkpoint(args.checkpoint)) if args.checkpoint else None
    members = [load_classifier(m, pretrained) for m in args.member]
    result = evaluate_ensemble(members, args.test)
    models = [f"{m['encoder'] or 'pretrained'} ({m['mode']}, seed {m['seed']})" for m in result["members"]]
    names = [*args.member, "ensemble (mean probability)"]
    width, model_width = max(len(n) for n in names), max(len(m) for m in models)
    print(f"{'member':<{width}}  {'model':<{model_width}}  test %")
    for name, model, m in zip(args.member, models, result["members"]):
        print(f"{name:<{width}}  {model:<{model_width}}  {100 * m['test_acc']:6.2f}")
    print(f"{names[-1]:<{width}}  {'':<{model_width}}  {100 * result['test_acc']:6.2f}   "
          f"({result['samples']} samples, {result['skipped']} unreadable skipped; best member {100 * result['best_member_test_acc']:.2f}, all members "
          f"agree on {100 * result['agreement']:.1f} %)")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_text_atomic(os.path.join(args.out, ENSEMBLE_FILE), json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {os.path.join(args.out, ENSEMBLE_FILE)}")
    return 0
