"""Learning quality on UCR problems: {FCN from scratch, PatchTST pretrained by masked-series
modelling} x {no augmentation, the standard series policy, the searched policy} on each problem's
standard TEST split, every cell over 5 seeds, beside a linear model on the raw series and the
published accuracies. Resumable: every finished run is kept in ``results.jsonl`` and skipped.

Stages:

1. shards of each problem's TRAIN and TEST splits and of the pretraining corpus (the TRAIN splits
   of the univariate problems bundled in aeon; test splits are never read for pretraining);
2. masked-series pretraining (``configs/series-pretrain.yaml``), reused when finished, before the
   first pretrained model (FCN from scratch needs none, and goes first);
3. per (model, problem), the search (``configs/series-search.yaml``: successive halving over the
   series ops and the fine-tune's hyperparameters, selected on 20 % of TRAIN held out, or on the
   mean of ``--folds`` such splits);
4. per (model, problem, policy, seed), a fine-tune on the whole TRAIN split (the archive's
   protocol), tested on TEST: no augmentation, ``series-basic`` (one of Iwana and Uchida's six
   reference ops per copy, one copy beside each series), and the searched point (its policy and
   hyperparameters);
5. logistic regression on the raw series with the same labels (the floor every model must beat);
6. ensembles (``pipelines.finetune.ensemble``): per (problem, policy, seed) the mean of the
   probabilities of member models trained with that policy and seed (FCN and ResNet, as in
   Fawaz et al.'s network ensembles), from their saved fine-tunes.

``fcn3k`` (a member only) has no search: it trains no augmentation and the standard policy.

    python benchmarks/series_quality.py [--problems GunPoint ArrowHead ItalyPowerDemand OSULeaf] [--seeds 0 1 2 3 4]
    python benchmarks/series_quality.py --models fcn3k resnet fcn3k+resnet --problems ArrowHead
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from stages import pretrain_once, print_wall_times, run_search

PRETRAIN, SEARCH = "configs/series-pretrain.yaml", "configs/series-search.yaml"
CORPUS = ("ArrowHead", "GunPoint", "ItalyPowerDemand", "OSULeaf", "ACSF1", "PickupGestureWiimoteZ", "UnitTest")
# Fawaz et al. 2019 (FCN), Ismail Fawaz et al. 2020 (InceptionTime), Dempster et al. 2020 (ROCKET)
# (OSULeaf stands in for ECG200, which aeon does not bundle)
PUBLISHED = {"GunPoint": (1.000, 1.000, 1.000), "ArrowHead": (0.850, 0.846, 0.814),
             "ItalyPowerDemand": (0.960, 0.965, 0.970), "OSULeaf": (0.980, 0.934, 0.941)}
MODELS = {
    "fcn": {"name": "FCN from scratch", "pretrained": False,
            "finetune": {"mode": "scratch", "encoder": "fcn", "encoder_kwargs": {"in_chans": 1}, "lr": 1e-3}},
    "patchtst": {"name": "PatchTST, masked-series pretrained", "pretrained": True,
                 "finetune": {"mode": "full", "lr": 3e-4}},
    # the ensembles' members: FCN trained three times longer, and ResNet (Wang et al. 2017)
    "fcn3k": {"name": "FCN from scratch, 3,000 steps", "pretrained": False, "policies": ("none", "series-basic"),
              "finetune": {"mode": "scratch", "encoder": "fcn", "encoder_kwargs": {"in_chans": 1}, "lr": 1e-3,
                           "steps": 3000}},
    "resnet": {"name": "ResNet from scratch, 1,500 steps", "pretrained": False,
               "finetune": {"mode": "scratch", "encoder": "resnet1d", "encoder_kwargs": {"in_chans": 1},
                            "lr": 1e-3, "steps": 1500}},
}
ENSEMBLES = {"fcn3k+resnet": {"name": "ensemble: FCN 3,000 steps + ResNet (mean probability)",
                              "members": ("fcn3k", "resnet")}}
POLICIES = ("none", "series-basic", "searched")


def _shards(root: str, problems: list[str]) -> dict[str, str]:
    from augtrain.cluster.commands.quickstart import ensure_shards

    paths = {}
    for name in dict.fromkeys(list(problems) + list(CORPUS)):
        for split in ("train", "test"):
            paths[f"{name}/{split}"] = str(Path(ensure_shards(root, split, f"ucr:{name}", f"ucr/{name}", 1000)).absolute())
    return paths


def _searched_point(out: Path) -> tuple[str, dict]:
    from augtrain.tune.space import JointSpace

    stage = json.loads((out / "stages" / "searched.json").read_text())
    policy, hparams = JointSpace.decode(stage["extra"]["best_point"])
    return policy.to_string(), hparams


class Results:
    """``results.jsonl``: one line per finished (problem, model, policy, seed) run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def get(self, **key) -> dict | None:
        return next((r for r in self.rows if all(r.get(k) == v for k, v in key.items())), None)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _finetune(problem: str, paths: dict, model: str, checkpoint: str | None, policy: str, hparams: dict, seed: int,
              out: Path) -> dict:
    """One fine-tune on the whole TRAIN split, tested on TEST at its end (no validation split),
    saved under ``<out>/models`` for the ensembles."""
    import torch

    from augtrain.pipelines.finetune import FinetuneSession, load_data, prepare_data
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.finetune import finetune_config_from_experiment

    torch.set_num_threads(1)
    experiment = load_config(SEARCH, [f"data.train={paths[f'{problem}/train']}", f"data.test={paths[f'{problem}/test']}"])
    cfg = finetune_config_from_experiment(experiment, SEARCH).with_updates(
        labels=1.0, val_labels=0, seed=seed, policy=policy, **{**MODELS[model]["finetune"], **hparams})
    data = load_data(prepare_data(cfg, str(out / "data" / problem)), cfg)
    cfg = cfg.for_labelled(len(data.train[1]))
    start = time.perf_counter()
    session = FinetuneSession(cfg, data, checkpoint)
    for epoch in range(cfg.resolved_epochs):
        last = session.run_epoch(policy, test=epoch == cfg.resolved_epochs - 1, validate=False)
    seconds = time.perf_counter() - start
    session.save(_model_dir(out, problem, model, policy, seed), extra={"source": policy})
    return {"test_acc": last["test_acc"], "epochs": cfg.resolved_epochs, "seconds": seconds}


def _model_dir(out: Path, problem: str, model: str, policy: str, seed: int) -> Path:
    return out / "models" / problem / f"{model}-{policy}-seed{seed}"


def _ensemble(problem: str, ensemble: str, policy: str, seed: int, out: Path) -> dict | None:
    """The ensemble of its members' saved fine-tunes for (problem, policy, seed), or None while
    one is missing."""
    from augtrain.pipelines.finetune.ensemble import evaluate_ensemble
    from augtrain.pipelines.finetune.saved import load_classifier

    dirs = [_model_dir(out, problem, m, policy, seed) for m in ENSEMBLES[ensemble]["members"]]
    if not all((d / "model.safetensors").is_file() for d in dirs):
        return None
    start = time.perf_counter()
    result = evaluate_ensemble([load_classifier(d) for d in dirs])
    return {"test_acc": result["test_acc"], "members_test_acc": [m["test_acc"] for m in result["members"]],
            "agreement": result["agreement"], "seconds": time.perf_counter() - start}


def _floor(problem: str, paths: dict, out: Path) -> float:
    from augtrain.pipelines.finetune import FinetuneConfig, load_data, prepare_data
    from augtrain.pipelines.finetune.controls import raw_logistic_regression

    cfg = FinetuneConfig(train=paths[f"{problem}/train"], test=paths[f"{problem}/test"], modality="series",
                         labels=1.0, val_labels=0)
    return raw_logistic_regression(load_data(prepare_data(cfg, str(out / "data" / problem)), cfg)).test_acc


def _cell(values: list[float], signed: bool = False) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):{'+' if signed else ''}.1f} ± {100 * sd:.1f}"


def _paired(results: Results, problem: str, model: str, policy: str, seeds: list[int]) -> list[float]:
    """Per seed, ``policy``'s test accuracy less no augmentation's (seeds with both runs)."""
    def acc(p: str, seed: int) -> float | None:
        row = results.get(problem=problem, model=model, policy=p, seed=seed)
        return row["test_acc"] if row else None

    pairs = [(acc(policy, s), acc("none", s)) for s in seeds]
    return [a - b for a, b in pairs if a is not None and b is not None]


def print_table(results: Results, problems: list[str], models: list[str], seeds: list[int],
                floors: dict[str, float]) -> None:
    """The Markdown table: per problem the floor, then per model no augmentation, the standard
    policy and every searched row on record (one per way of selecting: one split, or --folds)."""
    print("\n| problem | model | policy | test % (mean ± sd, "
          f"{len(seeds)} seeds) | less none, same seed (mean ± sd) | published FCN / InceptionTime / ROCKET |"
          "\n|---|---|---|---|---|---|")
    for problem in problems:
        published = " / ".join(f"{100 * a:.1f}" for a in PUBLISHED.get(problem, ())) or "-"
        print(f"| {problem} | logistic regression on the raw series | - | {100 * floors[problem]:.1f} | - | {published} |")
        for model in models:
            mine = [r for r in results.rows if (r["problem"], r["model"]) == (problem, model) and r["seed"] in seeds]
            searched = sorted({r["policy"] for r in mine if r["policy"].startswith("searched")})
            for policy in ["none", "series-basic", *searched]:
                accs = [r["test_acc"] for r in mine if r["policy"] == policy]
                if not accs:
                    continue
                spec = next((r["spec"] for r in mine if r["policy"] == policy), policy)
                shown = f"{policy}: `{spec}`".replace("|", "\\|") if policy in searched else policy
                effect = "-" if policy == "none" else _cell(_paired(results, problem, model, policy, seeds), True)
                print(f"| {problem} | {_name(model)} | {shown} | {_cell(accs)} | {effect} | |")


def _name(model: str) -> str:
    return MODELS[model]["name"] if model in MODELS else ENSEMBLES[model]["name"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PUBLISHED))
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS) + sorted(ENSEMBLES), default=None,
                        help="in this order (default: fcn patchtst; with --table every model on record); the "
                             "pretraining runs before the first pretrained model; an ensemble after its members")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--folds", type=int, default=1,
                        help="search.folds: the searches select on the mean of this many labelled/validation splits")
    parser.add_argument("--out", default="runs/series-quality")
    parser.add_argument("--data", default="data")
    parser.add_argument("--table", action="store_true", help="print the table of the runs on record and stop")
    args = parser.parse_args(argv)
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.jsonl")
    if args.table:
        recorded = {r["model"] for r in results.rows}
        models = args.models or [m for m in [*MODELS, *ENSEMBLES] if m in recorded]
        paths = _shards(args.data, args.problems)
        print_table(results, args.problems, models, args.seeds, {p: _floor(p, paths, out) for p in args.problems})
        return 0

    from augtrain.cluster.connect import connect

    args.models = args.models or ["fcn", "patchtst"]

    paths = _shards(args.data, args.problems)
    if any(m in MODELS and "searched" in MODELS[m].get("policies", POLICIES) for m in args.models):
        connect()  # the searches run trials on Ray
    seconds: dict[str, float] = {}
    checkpoint = None
    # the searched row's name says how its search selected (one split, or the mean of several)
    searched = "searched" if args.folds == 1 else f"searched-folds{args.folds}"
    policies = [p if p != "searched" else searched for p in POLICIES]
    floors = {p: _floor(p, paths, out) for p in args.problems}
    for model in args.models:  # models from scratch first: they need no pretraining
        if model in ENSEMBLES:
            for problem in args.problems:
                for policy in ("none", "series-basic"):
                    for seed in args.seeds:
                        key = {"problem": problem, "model": model, "policy": policy, "seed": seed}
                        if results.get(**key) is None and (row := _ensemble(problem, model, policy, seed, out)):
                            results.add({**key, **row, "spec": policy, "hparams": {}})
                            print(f"{problem} {model} {policy} seed {seed}: test {100 * row['test_acc']:.2f} % "
                                  f"(members {[round(100 * a, 2) for a in row['members_test_acc']]})", flush=True)
            continue
        if MODELS[model]["pretrained"] and checkpoint is None:
            corpus = ",".join(paths[f"{name}/train"] for name in CORPUS)
            checkpoint, seconds["pretraining"] = pretrain_once(PRETRAIN, [f"data.train=[{corpus}]"])
        for problem in args.problems:
            source = checkpoint if MODELS[model]["pretrained"] else None
            search_out = out / (f"{problem}-{model}" + (f"-folds{args.folds}" if args.folds > 1 else ""))
            allowed = MODELS[model].get("policies", POLICIES)
            mine = [p for p in policies if p in allowed or (p == searched and "searched" in allowed)]
            start = time.perf_counter()
            overrides = [f"data.train={paths[f'{problem}/train']}", f"data.test={paths[f'{problem}/test']}",
                         *[f"finetune.{k}={v}" for k, v in MODELS[model]["finetune"].items() if k != "encoder_kwargs"],
                         "search.baselines.policies=[none]", "search.baselines.series_m=[]", "search.random.enabled=false",
                         "search.controls.enabled=false", "search.evaluate_seeds=[]", f"search.folds={args.folds}"]
            searched_policy, searched_hparams = "", {}
            if searched in mine:
                run_search(SEARCH, source, search_out, overrides)
                seconds[f"{problem} {model} search"] = time.perf_counter() - start
                searched_policy, searched_hparams = _searched_point(search_out)
            start = time.perf_counter()
            for policy in mine:
                spec, hparams = (searched_policy, searched_hparams) if policy == searched else (policy, {})
                for seed in args.seeds:
                    key = {"problem": problem, "model": model, "policy": policy, "seed": seed}
                    if results.get(**key) is None:
                        row = _finetune(problem, paths, model, source, spec, hparams, seed, out)
                        results.add({**key, **row, "spec": spec, "hparams": hparams})
                        print(f"{problem} {model} {policy} seed {seed}: test {100 * row['test_acc']:.2f} % "
                              f"({row['epochs']} epochs, {row['seconds']:.0f} s)", flush=True)
            seconds[f"{problem} {model} fine-tunes"] = time.perf_counter() - start

    print_table(results, args.problems, args.models, args.seeds, floors)
    print_wall_times(seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
