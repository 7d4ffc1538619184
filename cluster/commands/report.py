"""``augtrain report RUN_DIR``: make a run's ``report.html`` and ``report.md`` again from the files
in its folder (a pretraining, fine-tuning or search run, or the quickstart's)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="write a run's report.html and report.md again",
                            description="Build the report of a run from its folder: a pretraining run (runs/NAME), "
                                        "a fine-tune (runs/NAME/finetune), a search (runs/NAME/search) or the "
                                        "quickstart's (runs/quickstart). Every command writes it when it ends; this "
                                        "makes it again, for example after a run was interrupted or moved.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder")
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    import augtrain.tune.search_report  # noqa: F401  (registers the search's run kind)
    from augtrain.pipelines.report import detect_run_kind, write_report

    kind = detect_run_kind(args.run_dir)  # a folder that holds no run: one line naming it
    path = write_report(args.run_dir)
    print(f"report ({kind.title}): {path} (and report.md beside it)")
    return 0
