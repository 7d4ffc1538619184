"""Stages the learning-quality benchmarks share: a pretraining run trained once and then reused,
and a search run resumably through the command line (``augtrain search --resume``), so that a
killed benchmark continues where it stopped."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def pretrain_once(config_path: str, overrides: list[str]) -> tuple[str, float]:
    """The checkpoint of ``config_path``'s pretraining (trained now, resumed, or finished and
    reused) and the seconds spent now. The config's own output folder is used, so that the run
    ``augtrain pretrain -c CONFIG`` makes is the one reused."""
    from augtrain.pipelines.train.checkpoint import latest_checkpoint, read_metadata
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.train.pretrain import plan_pretraining, run_pretraining

    config = load_config(config_path, overrides)
    plan = plan_pretraining(config, resume="latest")
    latest = latest_checkpoint(plan.loop.checkpoint_dir) if os.path.isdir(plan.loop.checkpoint_dir) else None
    total = plan.steps_per_epoch * plan.loop.epochs
    if latest is not None and read_metadata(latest)["optimizer_steps"] >= total:
        print(f"pretraining: reusing {latest} ({total} steps)")
        return str(latest), 0.0
    print(f"pretraining: {plan.describe()}")
    start = time.perf_counter()
    result = run_pretraining(plan)
    return result["checkpoint"], time.perf_counter() - start


def run_search(config_path: str, checkpoint: str | None, out: Path, overrides: list[str]) -> dict:
    """``augtrain search -c CONFIG [--checkpoint C] --out OUT --resume --set ...``; its summary."""
    from augtrain.cluster.cli import main

    args = ["search", "-c", config_path, "--out", str(out), "--resume"]
    if checkpoint is not None:
        args += ["--checkpoint", checkpoint]
    for item in overrides:
        args += ["--set", item]
    if main(args) != 0:
        raise SystemExit(f"the search in {out} failed")
    return json.loads((out / "search.json").read_text())


def row(summary: dict, prefix: str) -> dict | None:
    """The comparison's first row whose method starts with ``prefix``."""
    return next((r for r in summary["comparison"] if r["method"].startswith(prefix)), None)


def print_wall_times(seconds: dict[str, float], note: str = "") -> None:
    """The stages' wall time as a Markdown table (``note`` after each figure)."""
    print("\n| stage | wall (min) |\n|---|---|")
    for stage, s in seconds.items():
        print(f"| {stage} | {s / 60:.1f}{note} |")
