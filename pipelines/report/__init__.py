"""One report per run: ``report.html`` (self-contained) and ``report.md`` in the run folder, built
from the files the run left there (``kinds``), so ``augtrain report RUN_DIR`` makes the same
report again later. The document model and its two renderings: ``document``; the sections of
each kind of run: ``pretrain`` (and the data path), ``finetune``, and ``augtrain.tune.search_report``
for searches, which registers itself when imported.
"""

from augtrain.pipelines.report.document import Code, Facts, Figure, Files, Report, Section, Table, Text
from augtrain.pipelines.report.kinds import (
    PARTS_FILE,
    RunKind,
    build_report,
    detect_run_kind,
    get_run_kind,
    list_run_kinds,
    register_run_kind,
    write_parts,
    write_report,
    write_report_quietly,
)
from augtrain.pipelines.report import finetune, pretrain  # noqa: F401,E402  (register their run kinds)

__all__ = [
    "Code", "Facts", "Figure", "Files", "PARTS_FILE", "Report", "RunKind", "Section", "Table", "Text", "build_report",
    "detect_run_kind", "get_run_kind", "list_run_kinds", "register_run_kind", "write_parts", "write_report",
    "write_report_quietly",
]  # fmt: skip
