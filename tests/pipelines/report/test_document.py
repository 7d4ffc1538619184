"""The report document: one model, two renderings (self-contained HTML, Markdown with its figures
beside it), and the run-kind registry that finds what a folder holds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from augtrain.pipelines.report import (
    Code, Facts, Figure, Files, Report, Section, Table, Text, build_report, detect_run_kind, list_run_kinds,
    write_parts, write_report,
)
from augtrain.pipelines.report.figures import curves_png, image_png


def _report(run_dir) -> Report:
    (run_dir / "model.bin").write_bytes(b"x")
    curve = curves_png([("loss", {"train": ([1, 2, 3], [3.0, 2.0, 1.5])})], "step", "a <curve>")
    picture = image_png(np.full((8, 12, 3), 200, np.uint8))
    inner = Section("Inner", [Table(["a", "b|c"], [["1", "x|y"]], note="n", collapsed="fold")])
    return Report("t <script>alert(1)</script>", "sub", [
        Section("First", [Text("plain & <b>not bold</b>"), Facts([("k", "v")]), Figure(curve, "the curve", "c.png")],
                [inner]),
        Section("Second", [Figure(picture, "the picture", "p.png"), Code("echo 'hi'", collapsed="cmd"),
                           Files([("model", str(run_dir / "model.bin")), ("elsewhere", "/nonexistent/f")])]),
    ])


def test_html_is_self_contained_and_escaped_and_markdown_links_its_figures(tmp_path):
    html_path, md_path = _report(tmp_path).write(tmp_path)
    html = html_path.read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;not bold" in html
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in html and "https://" not in html  # nothing fetched: it opens from disk
    assert 'href="model.bin"' in html  # files of the run linked relatively: the folder can move
    assert html.count("<h2") == 2 and html.count("<h3") == 1 and "<details><summary>fold" in html
    md = md_path.read_text()
    assert "![the curve](report_files/c.png)" in md and (tmp_path / "report_files" / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 1 | x\\|y |" in md and "### Inner" in md and "[`model.bin`](model.bin)" in md


def test_figures_need_png_data_and_distinct_names(tmp_path):
    with pytest.raises(ValueError, match="'bad': not PNG"):
        Figure(b"GIF89a", "c", "bad")
    png = image_png(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="share a file name"):
        Report("t", "", [Section("s", [Figure(png, "a", "x.png"), Figure(png, "b", "x.png")])]).write(tmp_path)


def test_a_folder_without_a_run_is_named_with_what_was_looked_for(tmp_path):
    import augtrain.tune.search_report  # noqa: F401  (registers searches)

    assert {"pretrain", "finetune", "search", "stream"} <= set(list_run_kinds())
    with pytest.raises(ValueError, match=rf"{tmp_path}: not a run folder.*finetune.json.*search.json"):
        detect_run_kind(tmp_path)
    with pytest.raises(ValueError, match="no such run folder"):
        write_report(tmp_path / "missing")


def test_a_run_made_of_runs_shows_each_part_and_says_which_are_missing(tmp_path):
    part = tmp_path / "stream"
    part.mkdir()
    (part / "data-path.json").write_text('{"epoch": 0, "samples": 10, "seconds": 2.0, "workers": [{"rank": 0, '
                                         '"samples": 10, "batches": 1, "seconds": 1.0, "first_batch_s": 0.5, '
                                         '"classes": {"0": 4, "1": 6}}], "skipped": {"total": 1, "counts": '
                                         '{"undecodable image": 1}, "records": [{"shard": "s.tar", "key": "k", '
                                         '"reason": "undecodable image"}]}}')
    write_parts(tmp_path, "demo", [{"title": "Data", "dir": "stream"}, {"title": "Later", "dir": "not-yet"}])
    report = build_report(tmp_path)
    titles = [s.title for s in report.sections]
    assert titles[:2] == ["Data", "Later"] and report.title == "augtrain: demo"
    md = write_report(tmp_path).with_name("report.md").read_text()
    assert "| 0 | 10 | 1 | 0.50 | 1.00 | 4 | 6 |" in md  # the worker's row, its classes
    assert "| undecodable image | 1 |" in md and "s.tar" in md
    assert "not-yet: not found" in md


def test_parts_whose_figures_share_names_keep_each_figure(tmp_path):
    """Two searches (or two pretraining runs) of one quickstart draw figures of the same file names:
    each part's figures are written under its own prefix."""
    for name in ("one", "two"):
        metrics = tmp_path / name / "metrics"
        metrics.mkdir(parents=True)
        rows = "".join(f"step,0,{i},0.001,{3.0 - 0.1 * i},100,0.1,,\n" for i in range(1, 8))
        (metrics / "metrics.csv").write_text("kind,epoch,step,lr,loss,samples_per_s,data_wait,samples,skipped\n" + rows)
    write_parts(tmp_path, "demo", [{"title": "First run", "dir": "one"}, {"title": "Second run", "dir": "two"}])
    write_report(tmp_path)
    figures = sorted(p.name for p in (tmp_path / "report_files").glob("*.png"))
    assert figures == ["part1-pretrain-loss.png", "part2-pretrain-loss.png"], figures
