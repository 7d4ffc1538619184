"""A run's report as data: sections of blocks (text, facts, tables, figures, code, file links),
rendered twice from the same object:

- ``report.html``: one self-contained page (styles inline, figures embedded as ``data:`` URIs),
  which opens from disk with no server and survives being mailed or copied elsewhere;
- ``report.md``: the same content in Markdown, its figures written beside it under
  ``report_files/`` and linked relatively.

Links to the run's own files are relative to the run folder, so both files keep working when
the whole folder is moved.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from augtrain.pipelines.data.storage import write_text_atomic

HTML_NAME, MARKDOWN_NAME, FIGURES_DIR = "report.html", "report.md", "report_files"


@dataclass
class Text:
    """A paragraph of plain text."""

    text: str


@dataclass
class Facts:
    """Label: value pairs (a small two-column table without a header)."""

    items: list[tuple[str, str]]


@dataclass
class Table:
    """A table of strings; ``note`` is printed under it. ``collapsed`` folds it (long tables)."""

    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    collapsed: str | None = None  # the fold's summary line when folded


@dataclass
class Figure:
    """A PNG image. ``name`` is its file name under ``report_files/`` in the Markdown version."""

    png: bytes
    caption: str
    name: str

    def __post_init__(self) -> None:
        if not self.png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"figure {self.name!r}: not PNG data")


@dataclass
class Code:
    """Preformatted text (a command, a configuration); ``collapsed`` folds it behind a summary."""

    text: str
    collapsed: str | None = None


@dataclass
class Files:
    """Links to files of the run: (label, path). Paths inside the run folder are linked relatively."""

    items: list[tuple[str, str]]


Block = Union[Text, Facts, Table, Figure, Code, Files]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    sections: list["Section"] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


@dataclass
class Report:
    """The whole report: a title, a line under it, and sections."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        found: list[Figure] = []

        def walk(sections: Sequence[Section]) -> None:
            for s in sections:
                found.extend(b for b in s.blocks if isinstance(b, Figure))
                walk(s.sections)

        walk(self.sections)
        return found

    def write(self, run_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``report.html`` and ``report.md`` (with ``report_files/``) into ``run_dir``."""
        run_dir = Path(run_dir)
        figures = run_dir / FIGURES_DIR
        names = [f.name for f in self.figures()]
        if len(set(names)) != len(names):
            raise ValueError(f"report {self.title!r}: two figures share a file name: {sorted(names)}")
        if figures.is_dir():  # the folder is the report's own: figures of an earlier version go
            for stale in figures.glob("*.png"):
                if stale.name not in names:
                    stale.unlink()
        if names:
            figures.mkdir(parents=True, exist_ok=True)
            for f in self.figures():
                (figures / f.name).write_bytes(f.png)
        html_path, md_path = run_dir / HTML_NAME, run_dir / MARKDOWN_NAME
        write_text_atomic(html_path, to_html(self, run_dir))
        write_text_atomic(md_path, to_markdown(self, run_dir))
        return html_path, md_path


def _anchor(title: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    anchor, n = base, 1
    while anchor in used:
        n += 1
        anchor = f"{base}-{n}"
    used.add(anchor)
    return anchor


def _relative(path: str, run_dir: Path) -> str:
    """A link target: relative to the run folder where the file is inside it, else absolute."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return os.path.relpath(p.resolve(), run_dir.resolve()) if p.exists() else p.as_posix()


# ---------------------------------------------------------------- HTML

_STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:8px 0 2px} .subtitle{color:#5a6272;margin:0 0 16px}
h2{font-size:20px;border-bottom:2px solid #e3e6eb;padding-bottom:4px;margin-top:36px}
h3{font-size:17px;margin-top:26px} h4{font-size:15px;margin-top:20px}
nav{background:#f0f2f5;border-radius:6px;padding:8px 16px;font-size:14px} nav ul{margin:4px 0;padding-left:18px}
table{border-collapse:collapse;margin:10px 0;font-size:13.5px} th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#eef1f5} tr:nth-child(even) td{background:#fafbfc} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.facts td:first-child{color:#5a6272;white-space:nowrap;background:#fafbfc} table.facts td:last-child{overflow-wrap:anywhere}
figure{margin:14px 0} figure img{max-width:100%;border:1px solid #e3e6eb;border-radius:4px}
figcaption{color:#5a6272;font-size:13px} .note{color:#5a6272;font-size:13px;margin-top:2px}
pre{background:#f3f4f7;border-radius:6px;padding:10px 12px;white-space:pre-wrap;overflow-wrap:anywhere;font-size:12.5px}
details{margin:8px 0} summary{cursor:pointer;color:#2456a6} code{font-size:13px} a{color:#2456a6}
"""


def _cell(text: str) -> str:
    cls = ' class="num"' if re.fullmatch(r"[-+]?[\d.,]+( ± [\d.]+)?%?", text.strip()) else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def _block_html(block: Block, run_dir: Path) -> str:
    if isinstance(block, Text):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Facts):
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in block.items)
        return f'<table class="facts">{rows}</table>'
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
        body = "".join("<tr>" + "".join(_cell(str(c)) for c in row) + "</tr>" for row in block.rows)
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        if block.note:
            table += f'<p class="note">{html.escape(block.note)}</p>'
        if block.collapsed:
            table = f"<details><summary>{html.escape(block.collapsed)}</summary>{table}</details>"
        return table
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode()
        return (f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    if isinstance(block, Code):
        pre = f"<pre><code>{html.escape(block.text)}</code></pre>"
        return f"<details><summary>{html.escape(block.collapsed)}</summary>{pre}</details>" if block.collapsed else pre
    if isinstance(block, Files):
        items = "".join(f'<li>{html.escape(label)}: <a href="{html.escape(_relative(p, run_dir))}"><code>'
                        f"{html.escape(_relative(p, run_dir))}</code></a></li>" for label, p in block.items)
        return f"<ul>{items}</ul>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def _sections_html(sections: Sequence[Section], level: int, run_dir: Path, anchors: dict[int, str]) -> str:
    parts = []
    for s in sections:
        tag = f"h{min(level, 6)}"
        parts.append(f'<section><{tag} id="{anchors[id(s)]}">{html.escape(s.title)}</{tag}>')
        parts += [_block_html(b, run_dir) for b in s.blocks]
        parts.append(_sections_html(s.sections, level + 1, run_dir, anchors) + "</section>")
    return "\n".join(parts)


def _toc(sections: Sequence[Section], anchors: dict[int, str], depth: int = 2) -> str:
    if not sections or depth == 0:
        return ""
    items = "".join(f'<li><a href="#{anchors[id(s)]}">{html.escape(s.title)}</a>{_toc(s.sections, anchors, depth - 1)}</li>'
                    for s in sections)
    return f"<ul>{items}</ul>"


def _assign_anchors(sections: Sequence[Section], used: set[str], anchors: dict[int, str]) -> dict[int, str]:
    for s in sections:
        anchors[id(s)] = _anchor(s.title, used)
        _assign_anchors(s.sections, used, anchors)
    return anchors


def to_html(report: Report, run_dir: str | os.PathLike) -> str:
    """The report as one self-contained HTML page."""
    run_dir = Path(run_dir)
    anchors = _assign_anchors(report.sections, set(), {})
    body = _sections_html(report.sections, 2, run_dir, anchors)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head>\n<body><main>"
            f"<h1>{html.escape(report.title)}</h1><p class=\"subtitle\">{html.escape(report.subtitle)}</p>"
            f"<nav>{_toc(report.sections, anchors)}</nav>\n{body}\n</main></body></html>\n")


# ---------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _block_markdown(block: Block, run_dir: Path) -> str:
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Facts):
        return "\n".join(f"- **{k}:** {v}" for k, v in block.items)
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(c) for c in block.columns) + " |",
                 "|" + "---|" * len(block.columns)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        text = "\n".join(lines) + (f"\n\n{block.note}" if block.note else "")
        return f"<details><summary>{block.collapsed}</summary>\n\n{text}\n\n</details>" if block.collapsed else text
    if isinstance(block, Figure):
        return f"![{block.caption}]({FIGURES_DIR}/{block.name})\n\n*{block.caption}*"
    if isinstance(block, Code):
        fence = "```\n" + block.text.rstrip("\n") + "\n```"
        return f"<details><summary>{block.collapsed}</summary>\n\n{fence}\n\n</details>" if block.collapsed else fence
    if isinstance(block, Files):
        return "\n".join(f"- {label}: [`{_relative(p, run_dir)}`]({_relative(p, run_dir)})" for label, p in block.items)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _sections_markdown(sections: Sequence[Section], level: int, run_dir: Path) -> list[str]:
    parts: list[str] = []
    for s in sections:
        parts.append("#" * min(level, 6) + " " + s.title)
        parts += [_block_markdown(b, run_dir) for b in s.blocks]
        parts += _sections_markdown(s.sections, level + 1, run_dir)
    return parts


def to_markdown(report: Report, run_dir: str | os.PathLike) -> str:
    """The report in Markdown; figures are linked from ``report_files/``."""
    parts = [f"# {report.title}", report.subtitle] + _sections_markdown(report.sections, 2, Path(run_dir))
    return "\n\n".join(p for p in parts if p) + "\n"
