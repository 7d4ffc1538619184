"""``augtrain finetune``: fine-tune a pretraining checkpoint's encoder on a labelled subset.

    augtrain finetune -c configs/finetune-fmnist.yaml --checkpoint runs/fmnist-simclr \\
        [--policy trivialaugment] [--labels 600|0.01] [--mode full|linear|scratch]

The labelled (and validation) subsets are written once under ``<out>/data``; the schedule's length
follows the labelled count (``finetune.steps: auto``) unless ``finetune.epochs`` is given; training
runs on ``finetune.workers`` Ray Train workers; the last epoch is tested on the held-out split,
beside the control every fine-tune must clear: logistic regression on the raw pixels of the same
labels. ``<out>/finetune.json`` holds the metrics per epoch, the control, the test accuracy per
class of the saved model (``test_per_class``) and the resolved config.
"""

from __future__ import annotations

import argparse
import json
import os


def labels_arg(text: str) -> int | float:
    """``600`` -> 600 (a count); ``0.01`` -> 0.01 (a fraction)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--labels takes a count (600) or a fraction (0.01), got {text!r}")


def add_experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="experiment YAML (its finetune/search sections)")
    parser.add_argument("--checkpoint", default=None,
                        help="pretraining checkpoint: a step directory or a run's checkpoint folder (its latest)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. finetune.epochs=20 (repeatable)")
    parser.add_argument("--out", default=None, help="output folder (default: <experiment output>/<command>)")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("finetune", help="fine-tune a pretrained encoder on a labelled subset",
                            description="Fine-tune (full, linear probe, or from scratch as the control) on a "
                                        "stratified, seeded labelled subset with an augmentation policy, and "
                                        "evaluate on the held-out split.")
    add_experiment_args(parser)
    parser.add_argument("--policy", default=None, help="augmentation policy spec (default: finetune.policy)")
    parser.add_argument("--labels", type=labels_arg, default=None, help="labelled samples: a count or a fraction")
    parser.add_argument("--mode", choices=["full", "linear", "scratch"], default=None)
    parser.set_defaults(func=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from augtrain.cluster.connect import connect
    from augtrain.pipelines.train.config import load_config, save_resolved
    from augtrain.pipelines.finetune import finetune_config_from_experiment, prepare_data, resolve_checkpoint, run_finetune
    from augtrain.pipelines import console
    from augtrain.pipelines.modalities import get_modality
    from augtrain.pipelines.data.storage import write_text_atomic

    experiment = load_config(args.config, args.overrides)
    cfg = finetune_config_from_experiment(experiment, args.config, policy=args.policy, labels=args.labels,
                                          mode=args.mode)
    checkpoint = str(resolve_checkpoint(args.checkpoint)) if args.checkpoint else None
    if checkpoint is None and cfg.mode != "scratch":
        raise ValueError(f"finetune.mode {cfg.mode!r} needs --checkpoint (or use --mode scratch)")
    out = args.out or os.path.join(experiment.output_dir, "finetune")
    os.makedirs(out, exist_ok=True)
    console.set_run_dir(out)
    save_resolved(experiment, os.path.join(out, "config.yaml"))
    paths = prepare_data(cfg, os.path.join(out, "data"))
    cfg = cfg.for_labelled(paths.num_labelled)
    print(f"labelled subset: {paths.labelled} ({paths.num_labelled} of {cfg.train}); validation: {paths.val}; "
          f"test: {paths.test}; {cfg.epochs} epochs of batch {cfg.batch_size}"
          + (f" (steps: {cfg.steps})" if experiment.finetune is None or "epochs" not in experiment.finetune else ""))
    connect(args.address or experiment.cluster.address)
    result = run_finetune(cfg, paths, checkpoint, cfg.policy, storage_path=os.path.join(out, "train"),
                          test=paths.test is not None, progress_file=os.path.join(out, "progress.jsonl"))
    metric = get_modality(cfg.modality).metric  # what val_acc and test_acc measure
    record = {"checkpoint": checkpoint, "finetune": cfg.model_dump(mode="json"), "metric": metric,
              "metrics": result.metrics, "history": result.history, "model": result.checkpoint,
              "seconds": result.seconds, "control": None}
    record_path = os.path.join(out, "finetune.json")
    write_text_atomic(record_path, json.dumps(record, indent=1, default=str))  # kept, whatever follows
    if paths.test is not None and result.checkpoint:  # the test metric per class, from the saved model
        from augtrain.pipelines.finetune.run import per_class_accuracy, predict_checkpoints

        try:
            labels, [predicted] = predict_checkpoints(cfg, paths, checkpoint, [result.checkpoint])
        except Exception as exc:  # noqa: BLE001 -- the model and its metrics are saved; say why this is missing
            print(f"warning: no per-class test {metric} ({type(exc).__name__}: {exc})")
        else:
            record["test_per_class"] = per_class_accuracy(labels, predicted["predictions"], paths.num_classes)
            write_text_atomic(record_path, json.dumps(record, indent=1, default=str))
    control = None
    if paths.test is not None:  # the floor every fine-tune must clear, on the same labels and test split
        from augtrain.pipelines.finetune.controls import raw_logistic_regression
        from augtrain.pipelines.finetune import load_data

        logreg = raw_logistic_regression(load_data(paths, cfg))
        control = {"method": logreg.name, "test_acc": logreg.test_acc, "val_acc": logreg.val_acc, **logreg.params}
        write_text_atomic(record_path, json.dumps({**record, "control": control}, indent=1, default=str))
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()
             if k in ("epoch", "train_loss", "val_acc", "test_acc")}
    print(f"{cfg.mode} fine-tune, policy {cfg.policy} ({metric}): {shown} in {result.seconds:.0f} s")
    if control is not None and "test_acc" in result.metrics:
        gap = 100 * (result.metrics["test_acc"] - control["test_acc"])
        print(f"control: {control['method']} (C={control['C']:g}) on the same labels: test_acc "
              f"{control['test_acc']:.4f}; the fine-tune is {gap:+.2f} points from it")
    from augtrain.pipelines.report import write_report_quietly

    report = write_report_quietly(out)
    print(f"results: {out}/finetune.json")
    if report is not None:
        console.set_closing(f"report: {report}")
    return 0
