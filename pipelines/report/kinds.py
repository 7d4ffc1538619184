"""Which kind of run a folder holds, and the report built from it.

A run kind is found by the file its runs leave behind (``marker``): a pretraining run's
``metrics/metrics.csv``, a fine-tune's ``finetune.json``, a search's ``search.json``, one
epoch streamed by the data path's ``data-path.json``, and a run made of others (the
quickstart) lists its parts in ``report-parts.json``. Each kind turns its folder into
report sections, read from the files alone: the report written at the end of a run and the
one ``augtrain report RUN_DIR`` makes later are the same.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from augtrain.pipelines.report.common import provenance_sections
from augtrain.pipelines.report.document import Figure, Report, Section, Text

log = logging.getLogger(__name__)

PARTS_FILE = "report-parts.json"


@dataclass(frozen=True)
class RunKind:
    """``sections(run_dir)`` builds the kind's own sections; ``priority`` orders detection
    (higher first) where a folder holds the markers of several kinds."""

    name: str
    marker: str
    title: str
    sections: Callable[[Path], list[Section]]
    priority: int = 0


_KINDS: dict[str, RunKind] = {}


def register_run_kind(kind: RunKind) -> RunKind:
    _KINDS[kind.name] = kind
    return kind


def list_run_kinds() -> list[str]:
    return sorted(_KINDS)


def get_run_kind(name: str) -> RunKind:
    if name not in _KINDS:
        raise ValueError(f"unknown run kind {name!r}; known: {', '.join(list_run_kinds())}")
    return _KINDS[name]


def detect_run_kind(run_dir: str | os.PathLike) -> RunKind:
    """The kind of run in ``run_dir``; a ValueError naming the folder and what was looked for."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    if (run_dir / PARTS_FILE).is_file():
        return _COMPOSITE
    found = [k for k in _KINDS.values() if (run_dir / k.marker).is_file()]
    if not found:
        wanted = ", ".join(f"{k.marker} ({k.name})" for k in sorted(_KINDS.values(), key=lambda k: k.name))
        raise ValueError(f"{run_dir}: not a run folder of augtrain (none of {wanted}, {PARTS_FILE})")
    return max(found, key=lambda k: k.priority)


def build_report(run_dir: str | os.PathLike) -> Report:
    """The report of the run in ``run_dir`` (its kind detected)."""
    run_dir = Path(run_dir).absolute()
    kind = detect_run_kind(run_dir)
    name = run_dir.name if kind is not _COMPOSITE else _parts(run_dir).get("title", run_dir.name)
    sections = _safe_sections(kind, run_dir) + provenance_sections(run_dir)
    subtitle = f"{kind.title} · {run_dir} · report made {time.strftime('%Y-%m-%d %H:%M')}"
    return Report(f"augtrain: {name}", subtitle, sections)


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; returns the HTML file's path."""
    html, _ = build_report(run_dir).write(run_dir)
    return html


def write_report_quietly(run_dir: str | os.PathLike) -> Path | None:
    """``write_report`` at the end of a run: a report that cannot be made is logged, never fatal
    to the run whose results are already saved."""
    try:
        return write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 -- the run's results are on disk; augtrain report retries
        log.warning("the report of %s could not be written (%s: %s); the results are there, and "
                    "`augtrain report %s` tries again", run_dir, type(exc).__name__, exc, run_dir)
        return None


def _safe_sections(kind: RunKind, run_dir: Path) -> list[Section]:
    """A kind's sections; one that fails is replaced by a section saying what failed."""
    try:
        return kind.sections(run_dir)
    except Exception as exc:  # noqa: BLE001 -- one broken part must not hide the rest of a report
        log.warning("report section %s of %s failed", kind.name, run_dir, exc_info=True)
        return [Section(kind.title, [Text(f"This part could not be shown: {type(exc).__name__}: {exc}")])]


# ---------------------------------------------------------------- runs made of runs


def _parts(run_dir: Path) -> dict:
    return json.loads((run_dir / PARTS_FILE).read_text())


def write_parts(run_dir: str | os.PathLike, title: str, parts: list[dict[str, str]]) -> Path:
    """Record that ``run_dir`` is made of other runs: ``parts`` are ``{"title", "dir"[, "kind"]}``
    (``dir`` relative to ``run_dir`` or absolute; ``kind`` when the folder holds several)."""
    path = Path(run_dir) / PARTS_FILE
    path.write_text(json.dumps({"title": title, "parts": parts}, indent=1))
    return path


def _prefix_figures(sections: list[Section], prefix: str) -> None:
    """Give every figure under ``sections`` the file name ``PREFIX-NAME``: two parts of a run (two
    searches, say) make figures of the same names."""
    for section in sections:
        section.blocks = [dataclasses.replace(b, name=f"{prefix}-{b.name}") if isinstance(b, Figure) else b
                          for b in section.blocks]
        _prefix_figures(section.sections, prefix)


def _composite_sections(run_dir: Path) -> list[Section]:
    sections = []
    for index, part in enumerate(_parts(run_dir)["parts"]):
        folder = (run_dir / part["dir"]).resolve()
        if not folder.is_dir():
            sections.append(Section(part["title"], [Text(f"{folder}: not found (the run did not get this far)")]))
            continue
        kind = get_run_kind(part["kind"]) if part.get("kind") else detect_run_kind(folder)
        inner = _safe_sections(kind, folder)
        _prefix_figures(inner, f"part{index + 1}")
        own = Section(part["title"], [Text(f"Run folder: {folder}" + ("" if folder == run_dir else
                                           f" (its own report: {folder / 'report.html'})"))])
        if inner and inner[0].title == part["title"]:  # the part's main section: its blocks under the part's title
            own.blocks += inner[0].blocks
            own.sections = inner[0].sections + inner[1:]
        else:
            own.sections = inner
        sections.append(own)
    return sections


_COMPOSITE = RunKind("composite", PARTS_FILE, "several runs together", _composite_sections)
