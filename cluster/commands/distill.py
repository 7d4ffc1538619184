"""``augtrain distill``: train a student on fine-tuned teachers' predictions over the unlabelled pool.

    augtrain finetune -c configs/search-fmnist.yaml --checkpoint runs/fmnist-simclr-small/checkpoints --out runs/ft-s0
    augtrain distill -c configs/search-fmnist.yaml --teacher runs/ft-s0 [--teacher runs/ft-s1 ...] \\
        [--set distill.steps=2000] --out runs/student-s0

The teachers (``augtrain finetune`` output folders, or fine-tune checkpoints with ``--checkpoint``)
label every sample of the pool outside the validation subset; the student (from the pretraining
checkpoint, or from scratch with ``distill.init: scratch``) trains on those soft labels and the
labelled subset's true ones, with the teacher's augmentation policy as noise, then is tested on the
held-out split beside the teachers and the raw-pixel control. ``<out>/finetune.json`` holds its
metrics, history and config like a fine-tune's, with a ``distill`` record.
"""

from __future__ import annotations

import argparse
import json
import os

from augtrain.cluster.commands.finetune import add_experiment_args


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("distill", help="distil fine-tuned teachers into a student through the unlabelled pool",
                            description="Label the unlabelled pool with one or more fine-tuned teachers (soft "
                                        "predictions, their mean for several) and train a student on it "
                                        "(SimCLRv2's distillation step), then test it.")
    add_experiment_args(parser)
    parser.add_argument("--teacher", action="append", required=True, metavar="DIR",
                        help="an `augtrain finetune` output folder or a fine-tune checkpoint (repeatable: "
                             "an ensemble of teachers)")
    parser.set_defaults(func=_distill)


def _distill(args: argparse.Namespace) -> int:
    from augtrain.cluster.connect import connect
    from augtrain.pipelines import console
    from augtrain.pipelines.data.storage import write_text_atomic
    from augtrain.pipelines.finetune import prepare_data, resolve_checkpoint, run_finetune
    from augtrain.pipelines.finetune.config import parse_distill_config
    from augtrain.pipelines.finetune.distill import check_teachers, prepare_student_data, student_config
    from augtrain.pipelines.finetune.saved import load_classifier
    from augtrain.pipelines.train.config import load_config, save_resolved

    experiment = load_config(args.config, args.overrides)
    dcfg = parse_distill_config(experiment.distill, args.config)
    pretrained = str(resolve_checkpoint(args.checkpoint)) if args.checkpoint else None
    teachers = [load_classifier(t, pretrained) for t in args.teacher]
    check_teachers(teachers)
    checkpoint = pretrained or teachers[0].pretrained
    if checkpoint is None and dcfg.init == "pretrained":
        raise ValueError("distill.init 'pretrained' needs the pretraining checkpoint (--checkpoint)")
    out = args.out or os.path.join(experiment.output_dir, "distill")
    os.makedirs(out, exist_ok=True)
    console.set_run_dir(out)
    save_resolved(experiment, os.path.join(out, "config.yaml"))
    teacher_cfg = teachers[0].cfg
    paths = prepare_data(teacher_cfg, os.path.join(out, "data"))  # the teachers' subsets (same request, same keys)
    paths, record = prepare_student_data(dcfg, teacher_cfg, paths, teachers, os.path.join(out, "data"))
    cfg = student_config(dcfg, teacher_cfg, int(paths.num_labelled or 0))
    source = dcfg.policy or teachers[0].source or cfg.policy
    print(f"student set: {record['labelled']} labelled + {record['unlabelled']} pseudo-labelled samples "
          f"({record['skipped']} unreadable skipped; teachers' mean confidence {record['mean_confidence']:.3f}, "
          f"accuracy on the labelled subset {record['teachers_train_acc']:.3f}); {cfg.epochs} epochs of batch "
          f"{cfg.batch_size} from {'the pretraining checkpoint' if dcfg.init == 'pretrained' else 'scratch'}")
    connect(args.address or experiment.cluster.address)
    result = run_finetune(cfg, paths, checkpoint, source, storage_path=os.path.join(out, "train"),
                          test=paths.test is not None, progress_file=os.path.join(out, "progress.jsonl"))
    teacher_accs = [t.test_acc for t in teachers]
    out_record = {"checkpoint": checkpoint, "finetune": cfg.model_dump(mode="json"), "metric": "accuracy",
                  "metrics": result.metrics, "history": result.history, "model": result.checkpoint,
                  "seconds": result.seconds, "control": teachers[0].control,  # same labels, same test split
                  "distill": {**dcfg.model_dump(mode="json"), **{k: v for k, v in record.items() if k != "request"},
                              "teachers": [str(t) for t in args.teacher], "teachers_test_acc": teacher_accs,
                              "policy": source}}
    write_text_atomic(os.path.join(out, "finetune.json"), json.dumps(out_record, indent=1, default=str))
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()
             if k in ("epoch", "train_loss", "val_acc", "test_acc")}
    known = [a for a in teacher_accs if a is not None]
    print(f"student: {shown} in {result.seconds:.0f} s"
          + (f"; teachers' test_acc {', '.join(f'{a:.4f}' for a in known)}" if known else ""))
    from augtrain.pipelines.report import write_report_quietly

    report = write_report_quietly(out)
    print(f"results: {out}/finetune.json")
    if report is not None:
        console.set_closing(f"report: {report}")
    return 0
