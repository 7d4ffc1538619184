"""Generated samples on Fashion-MNIST: do a VAE's class-conditional samples make better models?

The comparison, per labelled-set size (100 and 600 labels) and seed (label seed = fine-tune seed):

* three initialisations of the same ``cnn-small``: random (scratch), the VAE's encoder
  (``configs/pretrain-fmnist-vae.yaml``) and SimCLR's (``configs/pretrain-fmnist.yaml``), each
  fine-tuned with the recipe of ``configs/finetune-fmnist-generated.yaml`` (the searched point of
  docs/learning-quality.md) on the real labels only, and again with generated samples mixed in;
* the generated set, 10,000 samples, an equal share per class, using no label beyond the
  fine-tune's own labelled subset: ``--generator class-prior`` (the default) draws them with
  ``augtrain generate --condition-on`` that subset (a Gaussian per class in the VAE's latent space,
  fitted to those images alone); ``--generator cvae`` trains a class-conditional VAE on that subset
  starting from the VAE (``configs/pretrain-fmnist-cvae.yaml``) and draws from its decoder;
  ``--filter`` keeps only the samples that the real-only fine-tune of the same labelled subset
  (the last of ``--inits``) assigns to their class (``generate --filter-by``);
* the ratio: the share of every epoch's slots given to generated samples, chosen among
  ``--fractions`` by the validation accuracy (1,000 held-out training images) of the fine-tune
  of the last of ``--inits`` (SimCLR's by default) of the first seed, then used for every row of
  that labelled-set size;
* the measures of the generated set: label fidelity (how often a classifier trained on all
  60,000 real labels, the "judge", initialised as ``--judge-init``, agrees with the class drawn)
  and the classification accuracy
  score (Ravuri and Vinyals 2019: ``cnn-small`` trained from scratch on the generated set alone,
  500 optimizer steps as every other fine-tune, tested on the 10,000 real test images; the first
  seed's set by default, ``--cas-seeds``), both per class.

Every run is an ``augtrain`` command in its own folder under ``--out``, skipped when its result
is there, so a killed benchmark continues where it stopped; ``--jobs`` runs that many at once
(one fine-tune worker each). It prints the table and writes it to ``<out>/summary.md``. The two
generators keep their generated sets, mixed fine-tunes and results apart in one ``--out``
(``cvae-`` and ``filtered-`` before their names), so they share the real-only fine-tunes and the
judge.

    python benchmarks/generative_quality.py [--labels 100 600] [--seeds 0 1 2] [--jobs 2] \
        [--generator class-prior|cvae] [--inits scratch vae simclr] [--judge-init simclr]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stages import pretrain_once

CONFIG = "configs/finetune-fmnist-generated.yaml"
VAE_CONFIG, SIMCLR_CONFIG = "configs/pretrain-fmnist-vae.yaml", "configs/pretrain-fmnist.yaml"
CVAE_CONFIG = "configs/pretrain-fmnist-cvae.yaml"
INITS = ("scratch", "vae", "simclr")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class Runner:
    """``augtrain`` commands, each in its own output folder, skipped when their result exists."""

    def __init__(self, out: Path, jobs: int, overrides: list[str] = ()) -> None:
        self.out, self.jobs, self.overrides = out, jobs, [a for o in overrides for a in ("--set", o)]
        self.augtrain = shutil.which("augtrain", path=str(Path(sys.executable).parent)) or "augtrain"

    def run(self, name: str, args: list[str], result: str, key: str | None = None) -> Path:
        """``augtrain ARGS`` in ``out/name``, unless ``result`` is there (holding ``key``: the last
        field a command writes, so that a run killed half-way through its record runs again)."""
        folder = self.out / name
        if (folder / result).is_file() and (key is None or key in json.loads((folder / result).read_text())):
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(folder / "command.log", "w") as log:
            code = subprocess.run([self.augtrain, *args], stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0 or not (folder / result).is_file():
            raise SystemExit(f"{name}: augtrain {' '.join(args[:1])} failed (exit {code}); see {folder}/command.log")
        print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
        return folder

    def finetune(self, name: str, init: str, checkpoints: dict[str, str], labels: str, seed: int,
                 extra: list[str] = ()) -> dict:
        args = ["finetune", "-c", CONFIG, "--labels", labels, "--out", str(self.out / name),
                "--set", f"finetune.seed={seed}", "--set", f"finetune.label_seed={seed}", *self.overrides, *extra]
        args += ["--mode", "scratch"] if init == "scratch" else ["--checkpoint", checkpoints[init]]
        return json.loads((self.run(name, args, "finetune.json", "control") / "finetune.json").read_text())

    def all(self, calls: list) -> list:
        with ThreadPoolExecutor(self.jobs) as pool:
            return list(pool.map(lambda call: call(), calls))


def write_grid(shards: Path, png: Path) -> None:
    """Ten generated samples per class, a row per class, as a PNG (once)."""
    if png.is_file():
        return
    from PIL import Image

    from augtrain.pipelines.finetune.subsets import load_arrays
    from augtrain.pipelines.generate import class_grid

    values, labels, names = load_arrays(str(shards), channels=1, limit=500)
    Image.fromarray(class_grid(values, labels, len(names))).save(png)


def mean_sd(values: list[float]) -> str:
    values = [100 * v for v in values]
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 600])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5],
                        help="shares of every epoch's slots given to generated samples, chosen among by validation")
    parser.add_argument("--n", type=int, default=10_000, help="generated samples per labelled subset")
    parser.add_argument("--judge-steps", type=int, default=938,
                        help="optimizer steps of the all-labels judge (938: one epoch of 60,000 at batch 64)")
    parser.add_argument("--cas-steps", type=int, default=500,
                        help="optimizer steps of the accuracy score's classifier (on the generated set alone)")
    parser.add_argument("--cas-seeds", type=int, default=1,
                        help="the accuracy score of the generated sets of this many seeds (the first ones)")
    parser.add_argument("--jobs", type=int, default=2, help="augtrain commands at once (one worker each)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every fine-tune (e.g. finetune.steps=20 for a quick look)")
    parser.add_argument("--generator", choices=["class-prior", "cvae"], default="class-prior",
                        help="class-prior: the VAE's latent Gaussians fitted to the labelled subset; cvae: a "
                             "conditional VAE trained on the labelled subset from the VAE")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="generate --temperature: the class Gaussians' (class-prior) or the prior's (cvae) sd")
    parser.add_argument("--filter", action="store_true",
                        help="keep only the generated samples the real-only fine-tune of the same labels agrees with")
    parser.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS),
                        help="initialisations compared (the last one's first seed chooses the generated share)")
    parser.add_argument("--judge-init", choices=INITS, default="simclr",
                        help="initialisation of the all-labels judge of label fidelity")
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", default="runs/generative-quality")
    args = parser.parse_args(argv)
    out = Path(args.out).absolute()

    seconds: dict[str, float] = {}

    from augtrain.cluster.commands.quickstart import ensure_shards

    train, test = ensure_shards(args.data, "train"), ensure_shards(args.data, "test")
    data = [f"data.train={train}", f"data.test={test}"]
    runner = Runner(out, args.jobs, [*data, *args.overrides])  # every fine-tune reads these shards
    checkpoints = {}
    for init, config in (("vae", VAE_CONFIG), ("simclr", SIMCLR_CONFIG)):
        if init == "vae" or init in args.inits or init == args.judge_init:
            checkpoints[init], seconds[f"{init} pretraining"] = pretrain_once(config, data)
    inits, chooser = list(args.inits), args.inits[-1]
    prefix = (("" if args.generator == "class-prior" else f"{args.generator}-") + ("filtered-" if args.filter else "")
              + ("" if args.temperature == 1.0 else f"t{args.temperature:g}-"))
    gen, mix, cas_name = f"{prefix}generated", f"{prefix}gen", f"{prefix}cas"

    def judge_run() -> dict:
        return runner.finetune("judge", args.judge_init, checkpoints, "1.0", 0,
                               ["--set", "finetune.val_labels=0", "--set", f"finetune.steps={args.judge_steps}"])

    def generator(tag: str, s: int, labelled: str) -> list[str]:
        """The ``generate`` arguments of seed ``s``'s generated set (after training its cvae)."""
        if args.generator == "class-prior":
            return ["--checkpoint", checkpoints["vae"], "--condition-on", labelled]
        name = f"{tag}/cvae-s{s}"  # its report is written last: a run killed before it trains again
        overrides = [f"data.train={labelled}", f"output={out / name}", f"model.init={checkpoints['vae']}", f"seed={s}"]
        folder = runner.run(name, ["pretrain", "-c", CVAE_CONFIG, "--resume", "latest",
                                   *[a for o in overrides for a in ("--set", o)]], "report.html")
        return ["--checkpoint", str(folder / "checkpoints")]

    results: dict[str, dict] = {}
    for labels in args.labels:
        tag = f"l{labels}"
        start = time.perf_counter()
        pairs = [(i, s) for s in args.seeds for i in inits]
        done = runner.all([judge_run] + [lambda i=i, s=s: runner.finetune(f"{tag}/{i}-real-s{s}", i, checkpoints,
                                                                          str(labels), s) for i, s in pairs])
        judge, real = done[0], dict(zip(pairs, done[1:]))  # the judge trains beside the first size's runs
        results["judge"] = {"test_acc": judge["metrics"]["test_acc"], "epochs": judge["finetune"]["epochs"]}
        beside = " and the judge" if labels == args.labels[0] else ""
        seconds[f"{labels} labels: real only ({len(real)} fine-tunes{beside})"] = time.perf_counter() - start

        start = time.perf_counter()
        generated = {}
        for s in args.seeds:
            labelled = str(out / tag / f"{chooser}-real-s{s}" / "data" / "labelled")  # the same for every init
            folder = runner.run(f"{tag}/{gen}-s{s}", ["generate", *generator(tag, s, labelled), "--n",
                                                      str(args.n), "--out", str(out / tag / f"{gen}-s{s}"),
                                                      "--judge", str(out / "judge"), "--seed", str(s),
                                                      "--temperature", str(args.temperature),
                                                      *(["--filter-by", str(out / tag / f"{chooser}-real-s{s}")]
                                                        if args.filter else [])],
                                "manifest.json")
            generated[s] = json.loads((folder / "manifest.json").read_text())["synthetic"]
            write_grid(folder, out / tag / f"{gen}-s{s}.png")
        seconds[f"{labels} labels: generating"] = time.perf_counter() - start

        def with_generated(init: str, s: int, fraction: float) -> dict:
            return runner.finetune(f"{tag}/{init}-{mix}{fraction:g}-s{s}", init, checkpoints, str(labels), s,
                                   ["--set", f"finetune.synthetic={out / tag / f'{gen}-s{s}'}",
                                    "--set", f"finetune.synthetic_fraction={fraction}"])

        start = time.perf_counter()
        first = args.seeds[0]
        candidates = runner.all([lambda f=f: with_generated(chooser, first, f) for f in args.fractions])
        chosen = max(zip(args.fractions, candidates), key=lambda fc: (fc[1]["metrics"]["val_acc"], -fc[0]))[0]
        print(f"{labels} labels: generated fraction {chosen:g} chosen by validation accuracy ("
              + ", ".join(f"{f:g}: {100 * c['metrics']['val_acc']:.1f} %" for f, c in zip(args.fractions, candidates))
              + ")")
        seconds[f"{labels} labels: choosing the fraction"] = time.perf_counter() - start

        start = time.perf_counter()
        cas_seeds = args.seeds[:args.cas_seeds]

        def cas_run(s: int) -> dict:
            folder = runner.run(f"{tag}/{cas_name}-s{s}", [
                "finetune", "-c", CONFIG, "--mode", "scratch", "--labels", "1.0",
                "--out", str(out / tag / f"{cas_name}-s{s}"),
                "--set", f"finetune.train={out / tag / f'{gen}-s{s}'}", "--set", "finetune.val_labels=0",
                "--set", f"finetune.seed={s}", "--set", f"finetune.steps={args.cas_steps}", *runner.overrides],
                "finetune.json", "control")
            return json.loads((folder / "finetune.json").read_text())

        done = runner.all([lambda i=i, s=s: with_generated(i, s, chosen) for i, s in pairs]
                          + [lambda s=s: cas_run(s) for s in cas_seeds])  # one pool: both cores stay busy
        mixed, cas = dict(zip(pairs, done[:len(pairs)])), dict(zip(cas_seeds, done[len(pairs):]))
        seconds[f"{labels} labels: with generated, and the accuracy score ({len(mixed) + len(cas)} fine-tunes)"] = \
            time.perf_counter() - start
        results[tag] = {"fraction": chosen, "fraction_val_acc": {str(f): c["metrics"]["val_acc"]
                                                                 for f, c in zip(args.fractions, candidates)},
                        "real": {f"{i}-s{s}": r["metrics"]["test_acc"] for (i, s), r in real.items()},
                        "generated": {f"{i}-s{s}": r["metrics"]["test_acc"] for (i, s), r in mixed.items()},
                        "label_fidelity": {str(s): g["label_fidelity"] for s, g in generated.items()},
                        "kept": {str(s): g["kept"] for s, g in generated.items()},
                        "label_fidelity_per_class": {str(s): g["label_fidelity_per_class"] for s, g in generated.items()},
                        "cas": {str(s): c["metrics"]["test_acc"] for s, c in cas.items()},
                        "cas_per_class": {str(s): c.get("test_per_class") for s, c in cas.items()},
                        "logreg": {str(s): (real[(inits[0], s)].get("control") or {}).get("test_acc")
                                   for s in args.seeds}}
    results.update({"seconds": seconds, "generator": args.generator, "filter": args.filter,
                    "temperature": args.temperature, "inits": inits, "judge_init": args.judge_init})
    (out / f"{prefix}results.json").write_text(json.dumps(results, indent=1))
    summary = report(results, args)
    (out / f"{prefix}summary.md").write_text(summary)
    print(summary)
    return 0


def report(results: dict, args: argparse.Namespace) -> str:
    lines = [f"Fashion-MNIST, all 10,000 test images; mean ± sd over seeds {args.seeds} (label seed = fine-tune "
             f"seed); generated by {args.generator}{' (filtered)' if args.filter else ''} at temperature "
             f"{args.temperature:g}; judge ({args.judge_init} fine-tuned on all 60,000 labels, "
             f"{results['judge']['epochs']} epoch(s)): {100 * results['judge']['test_acc']:.2f} % test accuracy", ""]
    lines += ["| labels | initialisation | real only | real + generated | paired difference | "
              "generated share (chosen by validation) |", "|---|---|---|---|---|---|"]
    for labels in args.labels:
        r = results[f"l{labels}"]
        for init in args.inits:
            real = [r["real"][f"{init}-s{s}"] for s in args.seeds]
            gen = [r["generated"][f"{init}-s{s}"] for s in args.seeds]
            lines.append(f"| {labels} | {init} | {mean_sd(real)} | {mean_sd(gen)} | "
                         f"{mean_sd([g - x for g, x in zip(gen, real)])} | {r['fraction']:g} |")
    lines += ["", "| labels | raw-pixel logistic regression | label fidelity | classification accuracy score "
                  f"(seeds {args.seeds[:args.cas_seeds]}) | generated samples kept, per seed |",
              "|---|---|---|---|---|"]
    for labels in args.labels:
        r = results[f"l{labels}"]
        lines.append(f"| {labels} | {mean_sd([v for v in r['logreg'].values() if v is not None])} | "
                     f"{mean_sd(list(r['label_fidelity'].values()))} | {mean_sd(list(r['cas'].values()))} | "
                     f"{', '.join(f'{k:,}' for k in r['kept'].values())} of {args.n:,} |")
    lines += ["", f"Per class, label fidelity (mean over seeds) / accuracy score (seeds {args.seeds[:args.cas_seeds]}):",
              "",
              "| class | " + " | ".join(f"{labels} labels" for labels in args.labels) + " |",
              "|---|" + "---|" * len(args.labels)]
    for c, name in enumerate(CLASSES):
        cells = []
        for labels in args.labels:
            r = results[f"l{labels}"]
            fid = statistics.mean(v[c] for v in r["label_fidelity_per_class"].values())
            cas = [v[c] for v in r["cas_per_class"].values() if v]
            cells.append(f"{100 * fid:.1f} / {100 * statistics.mean(cas):.1f}" if cas else f"{100 * fid:.1f} / -")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| stage | wall (min) |", "|---|---|"]
    lines += [f"| {stage} | {s / 60:.1f} |" for stage, s in results["seconds"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
