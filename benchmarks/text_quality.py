"""Learning quality on Rotten Tomatoes reviews: {BERT-Mini from scratch, BERT-Mini pretrained by
masked language modelling, MiniLM transfer} x {no augmentation, EDA at its paper's setting, the
searched policy} at 500 and 2,000 labelled reviews, every cell over 3 seeds on the film-disjoint
test split, beside TF-IDF + logistic regression on the same labels. Resumable: each stage is
reused when its output is complete, so a killed run continues where it stopped.

Stages:

1. shards of the train, test and unlabelled splits, and a WordPiece tokenizer trained on the
   training films' reviews and the plot summaries (labels unused);
2. masked language modelling (``configs/text-mlm.yaml``: BERT-Mini under Ray Train + DeepSpeed;
   ``configs/text-mlm-minilm.yaml``: MiniLM's weights trained on with MLM on the training films'
   texts, domain-adaptive pretraining) in the config's own output folder, so that a finished
   ``augtrain pretrain`` run is reused;
3. one search per (model, labels) from ``configs/text-search.yaml``: successive halving over the
   text ops, their magnitude and copies and the fine-tune's hyperparameters, beside no
   augmentation and EDA at the setting its paper recommends for the training-set size (Wei and
   Zou 2019, table 3: alpha 0.05 with 16 copies at 500 sentences, 8 copies at 2,000); every row
   trained again with 2 more seeds. The from-scratch searches compute the TF-IDF floor.

Fine-tuning lengths: BERT-Mini takes ``steps: auto`` at 500 labels (500 steps, 32 epochs) and
1,000 steps (16 epochs) at 2,000; Kim's CNN (``text-cnn``) and EDA's BiLSTM (``text-rnn``), at
learning rate 1e-3, from random embeddings or MiniLM's word vectors, 1,500 and 3,000;
MiniLM, already trained, takes 300 steps at 500 labels and 400
at 2,000 (19 and 6 epochs) at learning rate 5e-5, the usual range for fine-tuning a pretrained
BERT (Devlin et al. 2019).

    python benchmarks/text_quality.py [--labels 500 2000] [--models scratch cnn cnn-vectors rnn rnn-vectors minilm mlm mlm-minilm] [--out runs/text-quality]
    python benchmarks/text_quality.py --models minilm --labels 500 --method none   # no search: none and EDA only
    python benchmarks/text_quality.py --models cnn --labels 500 --method none --steps 3000 --keep best-val
        # a longer run tested at its best validation pass (early stopping), in runs/text-quality/cnn-500-steps3000-best-val
    python benchmarks/text_quality.py --models scratch --labels 500 --method none --label-seed 1
        # another draw of the 500 labelled reviews, in runs/text-quality/scratch-500-labelseed1
    python benchmarks/text_quality.py --models cnn --labels 500 --method none --mixup 1
        # every row with mixup of the texts' pooled features, in runs/text-quality/cnn-500-mixup1
    python benchmarks/text_quality.py --models cnn --labels 500 --val-groups
        # validated on films the labelled reviews do not come from, in runs/text-quality/cnn-500-film-val

The searches run model by model in the order given (scratch, then MiniLM, then the MLM model, whose
pretraining runs just before its searches), each at every label count in the order given, so that
a partial run has answered the questions that need the least compute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from stages import pretrain_once, print_wall_times, row, run_search

SEARCH = "configs/text-search.yaml"
EDA_COPIES = {500: 16, 2000: 8}  # Wei and Zou 2019, table 3 (alpha 0.05 for both sizes)


def _word_model(name: str, encoder: str, vectors: bool) -> dict:
    """A network that embeds tokens itself (Kim's CNN, EDA's BiLSTM), from scratch at lr 1e-3:
    from random embeddings of the trained tokenizer, or over pretrained word vectors (MiniLM's
    input embeddings and vocabulary, as in EDA's reference code and Kim's CNN-non-static:
    pretrained inputs, no pretrained layers)."""
    kwargs = ["finetune.encoder_kwargs={word_vectors: minilm}"] if vectors else []
    return {"name": name, "overrides": ["finetune.mode=scratch", f"finetune.encoder={encoder}", *kwargs,
                                        "finetune.lr=1.0e-3"],
            "steps": {500: 1500, 2000: 3000}, "own_vocabulary": vectors, "floor": True}


MODELS = {
    "scratch": {"name": "BERT-Mini from scratch", "overrides": ["finetune.mode=scratch"],
                "steps": {500: "auto", 2000: 1000}, "floor": True},
    # Kim (2014)'s CNN and EDA's RNN (two bidirectional LSTMs, its reference code's build_model):
    # the kinds of model EDA's +3.0 at 500 sentences was measured on
    "cnn": _word_model("Kim CNN from scratch", "text-cnn", vectors=False),
    "cnn-vectors": _word_model("Kim CNN, MiniLM word vectors", "text-cnn", vectors=True),
    "rnn": _word_model("EDA's BiLSTM from scratch", "text-rnn", vectors=False),
    "rnn-vectors": _word_model("EDA's BiLSTM, MiniLM word vectors", "text-rnn", vectors=True),
    "mlm": {"name": "BERT-Mini, MLM-pretrained", "overrides": [], "steps": {500: "auto", 2000: 1000},
            "pretrain": "configs/text-mlm.yaml"},
    # domain-adaptive MLM from MiniLM's weights (Gururangan et al. 2020), fine-tuned like MiniLM
    "mlm-minilm": {"name": "MiniLM-L6, domain-adaptive MLM", "overrides": ["finetune.lr=5.0e-5"],
                   "steps": {500: 300, 2000: 400}, "pretrain": "configs/text-mlm-minilm.yaml",
                   "own_vocabulary": True},
    "minilm": {"name": "MiniLM-L6 transfer",
               "overrides": ["finetune.mode=scratch", "finetune.encoder=minilm-l6",
                             "finetune.encoder_kwargs={pretrained: true}", "finetune.lr=5.0e-5"],
               "steps": {500: 300, 2000: 400}, "own_vocabulary": True},
}
POLICIES = (("none", "pretrained: none"), ("EDA (paper)", "pretrained: EDA best"),
            ("searched", "pretrained: searched"))


def _data(root: str) -> dict[str, str]:
    from augtrain.cluster.commands.quickstart import RECIPES, ensure_shards, ensure_tokenizer

    recipe = RECIPES["text"]
    paths = {split: ensure_shards(root, split, recipe["source"], recipe["folder"], recipe["shard_size"])
             for split in ("train", "test", "unlabelled")}
    paths["tokenizer"] = ensure_tokenizer(root, recipe["folder"], [paths["train"], paths["unlabelled"]])
    return paths


def _overrides(model: str, labels: int, paths: dict[str, str], steps: int | None = None) -> list[str]:
    steps = steps or MODELS[model]["steps"].get(labels, "auto")
    tokenizer = [f"model.encoder_kwargs.tokenizer={paths['tokenizer']}"]
    if not MODELS[model].get("own_vocabulary"):  # MiniLM and its word vectors bring their own
        tokenizer.append(f"finetune.encoder_kwargs.tokenizer={paths['tokenizer']}")
    return [f"data.train={paths['train']}", f"data.test={paths['test']}", *tokenizer,
            f"finetune.labels={labels}", f"finetune.steps={steps}",
            "search.random.enabled=false", "search.baselines.policies=[none]",
            "search.baselines.eda_m=[1]", f"search.baselines.eda_c=[{EDA_COPIES.get(labels, 4)}]",
            # the floor (TF-IDF + logistic regression) in the from-scratch models' searches
            f"search.controls.enabled={'true' if MODELS[model].get('floor') else 'false'}",
            *MODELS[model]["overrides"]]


def _cell(summary: dict | None, prefix: str) -> str:
    found = row(summary, prefix) if summary else None
    if not found or not found.get("tests"):
        return "-"
    tests = [100 * t for t in found["tests"]]
    sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
    return f"{statistics.mean(tests):.2f} ± {sd:.2f} (n={len(tests)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["scratch", "minilm", "mlm"])
    parser.add_argument("--out", default="runs/text-quality")
    parser.add_argument("--data", default="data")
    parser.add_argument("--method", default=None, choices=["halving", "tpe", "random", "none"],
                        help="search.method (default: the config's, halving); none trains the rows without a "
                             "search (no augmentation and EDA) at a fraction of the compute")
    parser.add_argument("--keep", default="last", choices=["last", "best-val"],
                        help="finetune.keep: test the last epoch's weights, or the best validation pass's "
                             "(early stopping's selection)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps instead of the model's own")
    parser.add_argument("--label-seed", type=int, default=0,
                        help="finetune.label_seed: which labelled (and validation) reviews are drawn")
    parser.add_argument("--mixup", type=float, default=0.0,
                        help="finetune.mixup: every row mixes pairs of texts' pooled features (senMixup) "
                             "with lam ~ Beta(ALPHA, ALPHA)")
    parser.add_argument("--val-groups", action="store_true",
                        help="finetune.val_group_key=group: validate on reviews of films the labelled subset "
                             "does not touch (the test split's relation to training)")
    args = parser.parse_args(argv)
    out = Path(args.out).absolute()

    from augtrain.cluster.connect import connect

    paths = _data(args.data)
    connect()
    summaries: dict[tuple[str, int], dict] = {}
    seconds: dict[str, float] = {}
    for model in args.models:
        checkpoint = None
        if "pretrain" in MODELS[model]:
            data = [f"data.train=[{paths['train']},{paths['unlabelled']}]", f"data.test={paths['test']}"]
            if not MODELS[model].get("own_vocabulary"):
                data.append(f"model.encoder_kwargs.tokenizer={paths['tokenizer']}")
            checkpoint, seconds[f"{model} pretraining"] = pretrain_once(MODELS[model]["pretrain"], data)
        for labels in args.labels:
            start = time.perf_counter()
            extra = [f"search.method={args.method}"] if args.method else []
            folder = f"{model}-{labels}"
            if args.steps:
                folder += f"-steps{args.steps}"
            if args.label_seed:
                extra.append(f"finetune.label_seed={args.label_seed}")
                folder += f"-labelseed{args.label_seed}"
            if args.val_groups:
                extra.append("finetune.val_group_key=group")
                folder += "-film-val"
            if args.mixup:
                extra.append(f"finetune.mixup={args.mixup}")
                folder += f"-mixup{args.mixup:g}"
            if args.keep != "last":
                extra.append(f"finetune.keep={args.keep}")
                folder += f"-{args.keep}"
            summaries[model, labels] = run_search(SEARCH, checkpoint, out / folder,
                                                  _overrides(model, labels, paths, args.steps) + extra)
            seconds[f"{model} at {labels} labels"] = time.perf_counter() - start

    print("\n| model | policy | " + " | ".join(f"{n} labels: test % (mean ± sd)" for n in args.labels) + " |")
    print("|---|---|" + "---|" * len(args.labels))
    floor = {n: next((s for (m, k), s in summaries.items() if k == n and row(s, "TF-IDF")), None) for n in args.labels}
    print("| TF-IDF + logistic regression | - | " + " | ".join(_cell(floor[n], "TF-IDF") for n in args.labels) + " |")
    for model in args.models:
        for policy, prefix in POLICIES:
            print(f"| {MODELS[model]['name']} | {policy} | "
                  + " | ".join(_cell(summaries.get((model, n)), prefix) for n in args.labels) + " |")
    print_wall_times(seconds, " (0: reused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
