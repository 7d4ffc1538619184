"""``augtrain pretrain -c CONFIG.yaml``: self-supervised pretraining under Ray Train + DeepSpeed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pretrain", help="pretrain a model on shards (Ray Train + DeepSpeed)",
                            description="Pretrain from an experiment file: shards streamed through the "
                                        "augmentation policy into DeepSpeed workers under Ray Train. The file is "
                                        "validated before Ray starts.")
    parser.add_argument("-c", "--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set engine.zero_stage=3 (repeatable)")
    parser.add_argument("--resume", default=None, metavar="PATH|latest",
                        help="continue from a checkpoint directory, or the newest one of this run")
    parser.add_argument("--address", default=None, help="Ray address (default: config, RAY_ADDRESS, else embedded)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan, start nothing")
    parser.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.train.pretrain import plan_pretraining, run_pretraining

    config = load_config(args.config, args.overrides)
    plan = plan_pretraining(config, args.resume)
    print(plan.describe())
    if args.dry_run:
        return 0
    from augtrain.cluster.connect import connect
    from augtrain.pipelines import console

    console.set_run_dir(config.output_dir)

    from augtrain.cluster.connect import check_spare_cpu

    check_spare_cpu(config.cluster.max_workers, config.cluster.cpus_per_worker, args.address or config.cluster.address)
    connect(args.address or config.cluster.address)
    result = run_pretraining(plan)
    print(f"checkpoint: {result['checkpoint']}\nmetrics: {result['metrics']}\nloss curve: {result['loss_plot']}")
    from augtrain.pipelines.report import write_report_quietly

    report = write_report_quietly(config.output_dir)
    if report is not None:
        console.set_closing(f"report: {report}")
    return 0
