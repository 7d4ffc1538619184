"""``augtrain k8s validate``: manifests checked offline, every error naming file, object and field.

Three layers: the schema (KubeRay CRDs for ``ray.io`` kinds, core Kubernetes schemas for the
rest), then the rules the KubeRay controller enforces (``rules.py``). A directory is walked; a
folder holding a ``kustomization.yaml`` is built with ``kubectl kustomize`` (or ``kustomize
build``) and its output validated, its own files (patches, partial objects) are not validated
alone; a kustomize ``Component`` folder is checked through the kustomizations that use it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from augtrain.cluster.k8s.rules import check_rules
from augtrain.cluster.k8s.schema import DEFAULT_KUBERNETES_VERSION, check_object

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Problem:
    """One error: where (file, object, field) and what."""

    source: str
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.obj}: {self.field}: {self.message}"


def object_label(obj: object, index: int) -> str:
    """``RayJob/augtrain-pretrain`` (or ``document N`` when kind/name are missing)."""
    if isinstance(obj, dict):
        kind = obj.get("kind") or "?"
        name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
        if kind != "?" or name:
            return f"{kind}/{name or '?'}"
    return f"document {index}"


def validate_objects(objects: Iterable[object], source: str,
                     kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[Problem]:
    """Schema errors, then controller-rule errors, of each object."""
    problems: list[Problem] = []
    for i, obj in enumerate(objects):
        label = object_label(obj, i)
        for err in check_object(obj, kubernetes_version):
            problems.append(Problem(source, label, err.field, err.message))
        if isinstance(obj, dict):
            for finding in check_rules(obj):
                problems.append(Problem(source, label, finding.field, finding.message))
    return problems


def load_documents(text: str, source: str) -> list[object]:
    """The non-empty YAML documents of ``text``; a parse error names the file."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    out: list[object] = []
    for doc in docs:  # a v1 List (kubectl get -o yaml) holds its objects in items
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out += doc["items"]
        else:
            out.append(doc)
    return out


def kustomize_build(directory: Path) -> str:
    """``kubectl kustomize DIR`` (or ``kustomize build DIR``): the rendered manifests."""
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(directory)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(directory)]
    else:
        raise RuntimeError(f"{directory}: building a kustomization needs `kubectl` or "
                           "`kustomize` on PATH")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=KUSTOMIZE_TIMEOUT_S)
    if proc.returncode != 0:
        raise ValueError(f"{directory}: kustomize build failed: {proc.stderr.strip()}")
    return proc.stdout


def kustomization_kind(directory: Path) -> str | None:
    """``Kustomization`` or ``Component`` when ``directory`` holds one, else None."""
    import yaml

    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            return str(data.get("kind") or "Kustomization") if isinstance(data, dict) else "Kustomization"
    return None


def collect(paths: Iterable[str | Path]) -> Iterator[tuple[str, Path]]:
    """``("file", path)`` and ``("kustomization", dir)`` units to validate, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_file() and path.name in KUSTOMIZATION_FILES:
            if kustomization_kind(path.parent) == "Kustomization":
                yield "kustomization", path.parent
        elif path.is_file():
            yield "file", path
        else:
            yield from _walk(path)


def _walk(directory: Path) -> Iterator[tuple[str, Path]]:
    kind = kustomization_kind(directory)
    if kind == "Kustomization":
        yield "kustomization", directory
    elif kind is None:
        for f in sorted(p for p in directory.iterdir() if p.is_file()):
            if f.suffix in MANIFEST_SUFFIXES:
                yield "file", f
    for sub in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from _walk(sub)


def validate_paths(paths: Iterable[str | Path],
                   kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> tuple[int, list[Problem]]:
    """Validate files, directories and kustomizations; returns (objects checked, problems)."""
    count, problems = 0, []
    for unit, path in collect(paths):
        source = str(path)
        text = kustomize_build(path) if unit == "kustomization" else path.read_text()
        docs = load_documents(text, source)
        count += len(docs)
        problems += validate_objects(docs, source, kubernetes_version)
    return count, problems
