"""Stage ``distill`` (``search.distill.enabled``): the searched model of each seed as the teacher
of a student of the same seed, trained on its soft predictions over the unlabelled pool with the
searched policy as noise (``pipelines.finetune.distill``: SimCLRv2's distillation step). The
student starts from the same pretraining checkpoint; the validation subset stays out of its
training set, so its validation accuracy is as honest as the teacher's.

Its rows are the table's ``pretrained: searched + distilled``: trial-epochs count the student's
passes as labelled-set epochs (samples it trained on / labelled samples), so its compute reads on
the same scale as every other row's.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from augtrain.pipelines import console
from augtrain.pipelines.finetune import FinetuneConfig, run_finetune
from augtrain.pipelines.finetune.distill import prepare_student_data, student_config
from augtrain.pipelines.finetune.saved import load_classifier
from augtrain.tune.evaluation import searched_method
from augtrain.tune.stages import SearchRun, StageResult, final_checkpoint, load_done, save_done

SEARCHED_ROW = "searched"  # the evaluation stage's name of the searched row


def searched_models(run: SearchRun) -> list[tuple[int, Path]]:
    """(seed, final checkpoint) of every model of the searched row: the search's own
    (``finetune.seed``) and the evaluation stage's other seeds."""
    models: list[tuple[int, Path]] = []
    searched = run.results.get("searched")
    if searched is not None:
        for t in searched.trials:
            ckpt = final_checkpoint(t)
            if ckpt is not None and t.get("test_acc") is not None:
                models.append((int(t["config"].get("seed", run.cfg.seed)), ckpt))
    evaluated = run.results.get("evaluate")
    for t in evaluated.trials if evaluated is not None else []:
        case = t["config"].get("case", {})
        ckpt = final_checkpoint(t)
        if case.get("method") == SEARCHED_ROW and ckpt is not None and t.get("test_acc") is not None:
            models.append((int(case["seed"]), ckpt))
    return sorted(dict(models).items())


def run_distill(run: SearchRun, cfg: FinetuneConfig) -> StageResult | None:
    """One student per model of the searched row (None: no searched model to distil)."""
    done = load_done(run, "distill")
    if done is not None:
        return done
    models = searched_models(run)
    if not models:
        console.say("distill: no searched model with a checkpoint to distil; stage skipped")
        return None
    start = time.perf_counter()
    dcfg = run.search.distill.student
    searched = searched_method(run)  # the searched policy: trial checkpoints hold the config, not the point
    source = dcfg.policy or (searched["source"] if searched else cfg.policy)
    labelled = int(run.paths.num_labelled or 0)
    rows: list[dict[str, Any]] = []
    for seed, ckpt in models:
        teacher = load_classifier(ckpt, run.checkpoint)
        folder = run.out_dir / "distill" / f"seed{seed}"
        paths, record = prepare_student_data(dcfg, teacher.cfg, run.paths, [teacher], str(folder))
        scfg = student_config(dcfg.model_copy(update={"seed": seed}), teacher.cfg, int(paths.num_labelled or 0))
        result = run_finetune(scfg, paths, run.checkpoint, source,
                              storage_path=str(run.out_dir / "train"), name=f"distill-seed{seed}",
                              test=True, max_failures=run.search.max_failures)
        samples = scfg.resolved_epochs * (int(paths.num_labelled or 0) // scfg.workers) * scfg.workers
        rows.append({"trial_id": f"seed{seed}", "config": {"method": "searched + distilled", "seed": seed,
                                                           "teacher": str(ckpt)},
                     "val_acc": result.metrics.get("val_acc"), "test_acc": result.metrics.get("test_acc"),
                     "epoch": result.metrics.get("epoch"), "epochs_trained": math.ceil(samples / max(labelled, 1)),
                     "error": None, "best_val_acc": result.metrics.get("val_acc"), "checkpoint": result.checkpoint,
                     "seconds": result.seconds, "student_set": {k: v for k, v in record.items() if k != "request"}})
        console.say(f"distill: seed {seed}, student test {100 * (result.metrics.get('test_acc') or 0):.2f} % "
                    f"in {result.seconds / 60:.1f} min")
    return save_done(run, StageResult("distill", rows, time.perf_counter() - start))
