"""Report sections every run has (how to run it again, its configuration, its logs), and the
data section of the shards a run read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from augtrain.pipelines.report.document import Code, Facts, Files, Section, Table, Text

COMMAND_FILE = "command.json"  # {"argv": [...], "cwd": ...}, written by ``console.set_run_dir``


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def command_of(run_dir: Path) -> tuple[str, Path] | None:
    """(the shell command that made the run, the folder it ran in), or None (made by the Python API)."""
    import json
    import shlex

    path = run_dir / COMMAND_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return " ".join(shlex.quote(w) for w in record["argv"]), Path(record["cwd"])


def resolve_path(spec: Any, run_dir: Path) -> Any:
    """A data path of the run's config: relative paths are relative to where the run was made."""
    if not isinstance(spec, str) or "://" in spec or Path(spec).is_absolute():
        return spec
    command = command_of(run_dir)
    if command is not None and not Path(spec).exists() and (command[1] / spec).exists():
        return str(command[1] / spec)
    return spec


def percent(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * float(value):.{digits}f}"


def provenance_sections(run_dir: Path) -> list[Section]:
    """How to reproduce the run, its resolved configuration, where its logs and files are."""
    section = Section("How to reproduce")
    command = command_of(run_dir)
    if command is not None:
        section.add(Text("The command that made this run, and the folder it was run in:"),
                    Code(f"cd {command[1]}\n{command[0]}"))
    else:
        section.add(Text(f"No {COMMAND_FILE} in the run folder: it was run by another command (the quickstart "
                         "runs a pretraining) or through the Python API."))
    config = run_dir / "config.yaml"
    if config.is_file():
        section.add(Text("The fully resolved configuration (every default filled in):"),
                    Code(config.read_text(), collapsed="config.yaml"))
    logs = [("augtrain's log (Ray's and DeepSpeed's records included)", str(run_dir / "logs" / "augtrain.log"))]
    logs = [(label, path) for label, path in logs if Path(path).exists()]
    if logs:  # an embedded Ray's own files are copied there as the command ends, after this report
        logs.append(("Ray's own log files, workers' output included (an embedded Ray's)", str(run_dir / "logs" / "ray")))
    section.add(Files(logs + [("this report in Markdown", str(run_dir / "report.md"))]))
    return [section]


def data_section(spec: Any, title: str = "Data", modality: str | None = None) -> Section:
    """Samples, shards and classes of the shards ``spec`` names (from their manifest, or by
    reading them when there is none)."""
    from augtrain.pipelines.data.shard_set import open_shards

    section = Section(title)
    try:
        shards = open_shards(spec, modality=modality)
    except Exception as exc:  # noqa: BLE001 -- moved or remote shards: the report still stands
        return section.add(Text(f"{spec}: could not be opened now ({type(exc).__name__}: {exc})"))
    manifest = shards.manifest
    facts = [("shards", f"{spec} ({len(shards.urls)} shard{'s' * (len(shards.urls) != 1)})"),
             ("samples", f"{shards.num_samples:,}"),
             ("modality", manifest.modality if manifest else modality or "image (no manifest)")]
    if shards.class_names:
        facts.append(("classes", f"{len(shards.class_names)}: " + ", ".join(shards.class_names)))
    if manifest and (manifest.source or manifest.split):
        facts.append(("written from", " ".join(x for x in (manifest.source, manifest.split and
                                                           f"({manifest.split} split)") if x)))
    section.add(Facts(facts))
    return section


def skipped_table(counts: dict[str, int], records: list[dict[str, Any]], where: str) -> list[Any]:
    """Blocks for skipped samples: counts by reason, then the first records by shard and key."""
    if not counts:
        return [Text(f"No sample was skipped ({where}).")]
    blocks: list[Any] = [Table(["reason", "samples"], [[r, str(n)] for r, n in sorted(counts.items())],
                               note=f"Skipped samples, {where}.")]
    if records:
        blocks.append(Table(["shard", "key", "reason", "detail"],
                            [[str(r.get("shard")), str(r.get("key")), str(r.get("reason")), str(r.get("detail", ""))]
                             for r in records[:200]], collapsed=f"the first {min(200, len(records))} skipped samples"))
    return blocks


def policy_preview(spec: Any, policy: Any, modality: str, name: str, what: str, size: int | None = None) -> Any:
    """A Figure of samples of ``spec`` beside copies augmented by ``policy`` (or a Text saying why not)."""
    from augtrain.pipelines.data.decode import first_values
    from augtrain.pipelines.modalities import get_modality
    from augtrain.pipelines.report.document import Figure
    from augtrain.pipelines.report.figures import image_png

    try:
        values = first_values(spec, 8, modality)
        picture = get_modality(modality).preview(values, policy, size=size, per_sample=5) if values else None
    except Exception as exc:  # noqa: BLE001 -- moved shards, a policy of a removed op: say so, keep the report
        return Text(f"No preview of {what}: {type(exc).__name__}: {exc}")
    if picture is None:
        return Text(f"No preview of {what}: the {modality} modality has no picture of its samples.")
    return Figure(image_png(picture), f"{what}: each framed original, then five augmented copies "
                                      f"(samples of {spec}).", name)
