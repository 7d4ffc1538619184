"""The search's comparison table: every method beside the controls that say whether it helped.

Rows, when their stages ran: logistic regression on raw pixels and a kNN of the checkpoint (no
training loop); a linear probe; the same network from scratch without augmentation and with the
searched policy; the pretrained model with no augmentation, each named baseline and the
RandAugment grid's best point (charged for the whole grid); random search over the joint space;
the searched model (charged for the method's stages); the searched models' distilled students
(charged for the search and one student). A row's test accuracy is the mean and
spread (sample sd) over its seeds: ``finetune.seed`` from the search's own trial, the others
from the ``evaluate`` stage. Compute: trial-epochs (epochs of every trial the row is charged for)
and trial-minutes (their training time). Each row's ``finetune.seed`` model is compared with the
grid's best ``finetune.seed`` model on the same test images (``significance.compare``).

``verdict`` answers the three questions a user asks: did pretraining help, did augmentation
help, did the search help.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from augtrain.tune.evaluation import LINEAR_PROBE, SCRATCH_NONE, SCRATCH_SEARCHED
from augtrain.tune.significance import compare
from augtrain.tune.space import grid_family
from augtrain.tune.stages import StageResult, selection_key

GRID_ROW = "pretrained: RandAugment best"  # the images' grid row; text's is "pretrained: EDA best"


def _grid_point(spec: str) -> str:
    """A grid spec's parameters for the row's name: ``(N=2, M=3)``, ``(magnitude 1, 16 copies)``."""
    match = re.fullmatch(r"rand-n(\d+)-m([\d.]+)", spec)
    if match:
        return f"(N={int(match[1])}, M={float(match[2]):g})"
    match = re.fullmatch(r"(?:eda|series)-m([\d.]+)-c(\d+)", spec)
    if match:
        return f"(magnitude {float(match[1]):g}, {int(match[2])} copies)"
    return f"({spec})"


def _evaluated(results: dict[str, StageResult]) -> dict[str, list[dict[str, Any]]]:
    """The evaluation stage's trials by row name."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for t in results["evaluate"].trials if "evaluate" in results else []:
        config = t["config"].get("case", t["config"])
        rows.setdefault(config["method"], []).append({**t, "stage": "evaluate"})
    return rows


def _tag(stage: str, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "stage": t.get("stage", stage)} for t in trials]


def comparison_rows(results: dict[str, StageResult]) -> list[dict[str, Any]]:
    """One dict per row (module docstring): method, seeds, val/test accuracy (mean, sd), compute."""
    rows: list[dict[str, Any]] = []
    more = _evaluated(results)
    controls = results.get("controls")
    for t in controls.trials if controls else []:
        if t["trial_id"] == "logreg":  # "logistic regression on raw pixels" -> "raw pixels: logistic regression"
            features = str(t["config"].get("method", "raw features")).removeprefix("logistic regression on ")
            rows.append({**_row(f"{features}: logistic regression", _tag("controls", [t]), 0), "raw": True})
        else:
            rows.append(_row(f"checkpoint: kNN (k={t['config'].get('k')})", _tag("controls", [t]), 0))
    for key, name in ((LINEAR_PROBE, "checkpoint: linear probe"), (SCRATCH_NONE, "scratch: none"),
                      (SCRATCH_SEARCHED, "scratch: searched")):
        if key in more:
            rows.append(_row(name, more[key], sum(t["epochs_trained"] for t in more[key])))
    base = results.get("baselines")
    if base is not None:
        by_spec = {t["config"].get("policy"): t for t in base.trials}
        for spec, trial in by_spec.items():
            if grid_family(spec) is None:
                rows.append(_row(f"pretrained: {spec}", _tag("baselines", [trial]) + more.get(spec, []),
                                 trial["epochs_trained"], charged=[trial]))
        grid = [t for s, t in by_spec.items() if grid_family(s) is not None and t["val_acc"] is not None]
        if grid:
            best = max(grid, key=selection_key)
            name = grid_family(best["config"]["policy"]).grid_name
            rows.append({**_row(f"pretrained: {name} best {_grid_point(best['config']['policy'])} of "
                                f"{len(grid)}-point grid",
                                _tag("baselines", [best]) + more.get(best["config"]["policy"], []),
                                sum(t["epochs_trained"] for t in grid), charged=grid), "grid": name})
    rows += _search_rows(results, more)
    for stage in ("hpo", "hpo_after"):
        if stage in results:
            hpo = results[stage]
            rows.append({"method": f"{stage}: ASHA + Optuna ({len(hpo.trials)} trials, best "
                                   f"{json.dumps(hpo.extra.get('best_hparams', {}), default=float)})",
                         "val_acc": hpo.extra.get("best_val_acc"), "test_acc": None, "test_acc_sd": None,
                         "trial_epochs": hpo.trial_epochs, "runs": len(hpo.trials), "seeds": 0,
                         "trial_minutes": _minutes(hpo.trials)})
    _add_paired(rows, _with_control_predictions(results.get("predictions"), results.get("controls")))
    return rows


def _search_rows(results: dict[str, StageResult], more: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    if "random_search" in results:
        random = results["random_search"]
        points = random.extra.get("points", 0)
        rows.append(_row(f"pretrained: random search ({points} point{'s' * (points != 1)})",
                         _tag("random_search", random.trials) + more.get("random search", []),
                         random.extra["search_trial_epochs"], charged=_charged(results, random)))
    if "searched" in results:
        searched = results["searched"]
        method = searched.extra["method"]
        how = method if method != "halving" else "halving, " + " -> ".join(str(n) for n, _ in searched.extra["rungs"])
        rows.append(_row(f"pretrained: searched ({how})", _tag("searched", searched.trials) + more.get("searched", []),
                         searched.extra["search_trial_epochs"], search_epochs=searched.extra["search_trial_epochs"],
                         charged=_charged(results, searched)))
    if results.get("distill") and results["distill"].trials and "searched" in results:  # the searched models' students
        distill = results["distill"]
        charged = _charged(results, results["searched"])
        rows.append(_row("pretrained: searched + distilled", _tag("distill", distill.trials),
                         results["searched"].extra["search_trial_epochs"] + distill.trials[0]["epochs_trained"],
                         search_epochs=results["searched"].extra["search_trial_epochs"],
                         charged=charged + distill.trials[:1]))
    pbt, replay = results.get("pbt"), results.get("replay")
    if pbt is not None:
        population = f"population {len(pbt.trials)}"
        stretch = float(pbt.extra.get("stretch", 1.0))
        if stretch != 1.0:  # a shorter search, its schedule stretched for the replay
            epochs = max(int(t["epoch"] or 0) for t in pbt.trials)
            population += f", {epochs} epochs, schedule stretched x{stretch:g}"
        if "pbt_best" in results:
            rows.append(_row(f"pretrained: PBT best member, as trained in the search ({population})",
                             _tag("pbt_best", results["pbt_best"].trials), pbt.trial_epochs,
                             search_epochs=pbt.trial_epochs, charged=pbt.trials))
        if replay is not None:
            rows.append(_row(f"pretrained: PBA schedule (PBT {population}, replayed)",
                             _tag("replay", replay.trials) + more.get("searched", []),
                             pbt.trial_epochs + replay.trial_epochs, search_epochs=pbt.trial_epochs,
                             charged=pbt.trials + replay.trials))
    return rows


def _charged(results: dict[str, StageResult], product: StageResult) -> list[dict[str, Any]]:
    return [t for stage in product.extra.get("stages", []) if stage in results for t in results[stage].trials]


def _minutes(trials: list[dict[str, Any]]) -> float | None:
    seconds = [t["seconds"] for t in trials if t.get("seconds") is not None]
    return sum(seconds) / 60 if seconds else None


def _row(method: str, trials: list[dict[str, Any]], trial_epochs: int, search_epochs: int | None = None,
         charged: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    tests = [t["test_acc"] for t in trials if t.get("test_acc") is not None]
    vals = [t["val_acc"] for t in trials if t.get("val_acc") is not None]
    return {"method": method, "val_acc": float(np.mean(vals)) if vals else None,
            "test_acc": float(np.mean(tests)) if tests else None,
            "test_acc_sd": float(np.std(tests, ddof=1)) if len(tests) > 1 else None,  # sample sd, as every table
            "tests": tests, "seeds": len(tests), "trial_epochs": int(trial_epochs), "runs": len(trials),
            "trial_minutes": _minutes(charged if charged is not None else trials),
            "models": [f"{t['stage']}/{t['trial_id']}" for t in trials],
            **({"search_epochs": search_epochs} if search_epochs is not None else {})}


def _add_paired(rows: list[dict[str, Any]], predictions: StageResult | None) -> None:
    """Each row's first model against the grid's best's first model on the same test samples
    (difference, its 95 % interval, McNemar's p), as ``row["paired"]``."""
    if predictions is None or not predictions.extra.get("labels"):
        return
    files = {f"{p['stage']}/{p['trial_id']}": p["predictions"] for p in predictions.trials if p["matches"]}
    reference = next((r for r in rows if r.get("grid")), None)
    if reference is None or not reference["models"] or reference["models"][0] not in files:
        return
    labels = np.load(predictions.extra["labels"])
    against = np.load(files[reference["models"][0]])
    for row in rows:
        models = row.get("models", [])
        if row is reference:
            row["paired"] = {"reference": True}
        elif models and models[0] in files:
            row["paired"] = {"against": reference["method"],
                             **compare(labels, np.load(files[models[0]]), against).to_dict()}


def _with_control_predictions(predictions: StageResult | None, controls: StageResult | None) -> StageResult | None:
    """The predictions stage with the controls' saved test predictions added (they need no
    checkpoint: ``run_controls`` wrote them)."""
    if predictions is None or controls is None:
        return predictions
    extra = [{"stage": "controls", "trial_id": t["trial_id"], "predictions": t["predictions"], "matches": True}
             for t in controls.trials if t.get("predictions")]
    return StageResult(predictions.stage, predictions.trials + extra, predictions.seconds, predictions.extra)


# ---------------------------------------------------------------- text


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if pct else str(value)


def test_text(row: dict[str, Any]) -> str:
    """A row's test accuracy in percent, with its seeds' spread: ``82.78 ± 0.16``."""
    return _fmt(row["test_acc"]) + (f" ± {100 * row['test_acc_sd']:.2f}" if row.get("test_acc_sd") else "")


def paired_text(paired: dict[str, Any] | None) -> str:
    """A row against the reference on the same test samples: difference [95 % CI], McNemar p."""
    if not paired:
        return "-"
    if paired.get("reference"):
        return "reference"
    low, high = paired["ci95"]
    return f"{100 * paired['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}], p = {paired['p_value']:.2g}"


def comparison_markdown(rows: list[dict[str, Any]], title: str, from_scratch: bool = False) -> str:
    """The table, its reading and the verdict. ``from_scratch``: the search had no checkpoint, so
    its ``pretrained:`` rows start from fresh weights, and the table says so."""
    paired = any(r.get("paired") for r in rows)
    grid_name = next((r["grid"] for r in rows if r.get("grid")), "the grid's")
    header = "| method | val acc (%) | test acc (%) | trial-epochs | seeds | trial-minutes |"
    if paired:
        header += f" test vs {grid_name} best: difference (points) [95 % CI], McNemar p |"
    lines = [f"# {title}", "", header, "|---|---|---|---|---|---|" + ("---|" if paired else "")]
    for r in rows:
        test = test_text(r)
        minutes = "-" if r.get("trial_minutes") is None else f"{r['trial_minutes']:.1f}"
        line = f"| {r['method']} | {_fmt(r['val_acc'])} | {test} | {r['trial_epochs']} | {r.get('seeds', '-')} | {minutes} |"
        lines.append(line + (f" {paired_text(r.get('paired'))} |" if paired else ""))
    lines += ["", "Test accuracy: mean ± sample sd over the row's seeds, on the whole test split. Trial-epochs and "
                  "trial-minutes: the training the row is charged for (the whole grid for its best point, every "
                  "stage of a search for its product; seeds trained again for the table are not search compute)."]
    if from_scratch:
        lines += ["This search had no checkpoint (`finetune.mode: scratch`): the rows named \"pretrained:\" start "
                  "from the encoder's fresh weights, as the \"scratch:\" rows do."]
    if paired:
        lines += [f"The last column compares each row's first model with the {grid_name} grid's best on the same "
                  "test samples (test-set noise only; training noise is what the seeds' spread shows)."]
    answers = verdict(rows)
    if answers:
        lines += ["", "## Did it help?", ""] + [f"- **{q}** {a}" for q, a in answers]
    return "\n".join(lines) + "\n"


def _find(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"].startswith(prefix) and r.get("test_acc") is not None), None)


def _difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``a`` against ``b``: the difference of mean test accuracies, and whether it exceeds the seeds' noise."""
    diff = 100 * (a["test_acc"] - b["test_acc"])
    spread = [100 * r["test_acc_sd"] for r in (a, b) if r.get("test_acc_sd")]
    noise = 2 * max(spread) if spread else None
    if noise is None:
        word = "better" if diff > 0 else "worse" if diff < 0 else "equal"
        return f"{word} by {abs(diff):.2f} points (one seed: no spread to judge noise by)"
    if abs(diff) <= noise:
        return f"within noise ({diff:+.2f} points; twice the larger seed sd is {noise:.2f})"
    return f"{'yes' if diff > 0 else 'no'}: {diff:+.2f} points (twice the larger seed sd is {noise:.2f})"


def verdict(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(question, answer) for pretraining, augmentation and search, where the rows allow it."""
    answers = []
    scratch, pretrained = _find(rows, "scratch: none"), _find(rows, "pretrained: none")
    searched = _find(rows, "pretrained: searched") or _find(rows, "pretrained: PBA schedule")
    if scratch and pretrained:
        answers.append(("Did pretraining help?", f"pretrained vs scratch, no augmentation: "
                                                 f"{_difference(pretrained, scratch)}."))
    if searched and pretrained:
        answers.append(("Did augmentation help?", f"searched vs no augmentation: {_difference(searched, pretrained)}."))
    grid = next((r for r in rows if r.get("grid") and r.get("test_acc") is not None), None)
    random = _find(rows, "pretrained: random search")
    if searched and grid:
        ratio = searched["trial_epochs"] / grid["trial_epochs"] if grid["trial_epochs"] else float("nan")
        text = f"searched vs the {grid['grid']} grid's best: {_difference(searched, grid)}, at {ratio:.2f}x its trial-epochs"
        if random:
            text += f"; vs random search at {random['trial_epochs']} trial-epochs: {_difference(searched, random)}"
        answers.append(("Did the search help?", text + "."))
    distilled = _find(rows, "pretrained: searched + distilled")
    if distilled and searched and distilled is not searched:
        answers.append(("Did distillation through the unlabelled pool help?",
                        f"students vs their searched teachers: {_difference(distilled, searched)}."))
    raw = next((r for r in rows if r.get("raw") and r.get("test_acc") is not None), None)
    best = max((r for r in rows if r.get("test_acc") is not None and not r.get("raw")),
               key=lambda r: r["test_acc"], default=None)
    if raw and best:
        answers.append(("Above the linear model on raw features?",
                        f"best row ({best['method']}) vs logistic regression on {raw['method'].split(':')[0]}: "
                        f"{_difference(best, raw)}."))
    return answers
