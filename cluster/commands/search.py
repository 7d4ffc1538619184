"""``augtrain search``: a search over augmentation policy and fine-tune hyperparameters together
(successive halving by default; TPE, random, PBT) on a pretraining checkpoint under Ray Tune,
with baselines, controls and every row trained with several seeds.

    augtrain search -c configs/search-fmnist.yaml --checkpoint runs/fmnist-simclr [--resume]

Results (best policy, schedule plot, trials and comparison tables) go to ``<out>``; see
``augtrain.tune.report``. ``--resume`` continues an interrupted search in the same folder.
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    from augtrain.cluster.commands.finetune import add_experiment_args

    parser = sub.add_parser("search", help="search augmentation policies and fine-tune hyperparameters",
                            description="Search policy and fine-tune hyperparameters together (search.method: "
                                        "halving, tpe, random or pbt), beside the baselines (none, basic, "
                                        "TrivialAugment, RandAugment grid), random search at the same compute and "
                                        "the controls (logistic regression on raw pixels, kNN and linear probe of "
                                        "the checkpoint, the same network from scratch), all under Ray Tune.")
    add_experiment_args(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search in the output folder")
    parser.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    import yaml

    from augtrain.cluster.connect import connect
    from augtrain.pipelines import console
    from augtrain.pipelines.data.shard_set import check_modality
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.finetune import finetune_config_from_experiment, resolve_checkpoint
    from augtrain.tune.config import parse_search_config
    from augtrain.tune.report import write_results
    from augtrain.tune.search import check_searchable, plan_search, run_search

    experiment = load_config(args.config, args.overrides)
    cfg = finetune_config_from_experiment(experiment, args.config)
    search = parse_search_config(experiment.search, args.config)
    checkpoint = str(resolve_checkpoint(args.checkpoint)) if args.checkpoint else None
    if checkpoint is None and cfg.mode != "scratch":
        raise ValueError(f"finetune.mode {cfg.mode!r} needs --checkpoint (or set finetune.mode: scratch)")
    out = args.out or os.path.join(experiment.output_dir, "search")
    os.makedirs(out, exist_ok=True)
    console.set_run_dir(out)
    resolved = {**experiment.resolved(), "finetune": cfg.model_dump(mode="json"),
                "search": search.model_dump(mode="json"), "checkpoint": checkpoint}
    with open(os.path.join(out, "config.yaml"), "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=False)

    check_searchable(cfg, search)
    check_modality(cfg.train, cfg.modality)  # shards of another modality: refused before Ray starts
    if cfg.test is not None:
        check_modality(cfg.test, cfg.modality)
    connect(args.address or experiment.cluster.address)
    run = plan_search(cfg, search, checkpoint, out, search.name or experiment.name, resume=args.resume)
    print(f"search {run.name}: {run.max_concurrent} trials at a time; labelled subset {run.paths.labelled}")
    results = run_search(run)
    write_results(results, out, run.cfg.epochs, resolved, title=f"{experiment.name}: augmentation search")
    print(open(os.path.join(out, "comparison.md")).read())
    print(f"results: {out} (comparison.md, best_policy.json, trials.csv)")
    import augtrain.tune.search_report  # noqa: F401  (registers the search's run kind)
    from augtrain.pipelines.report import write_report_quietly

    report = write_report_quietly(out)
    if report is not None:
        console.set_closing(f"report: {report}")
    return 0
