"""No module asks for a modality by name: stages ask the modality object (pipelines/modalities)
instead of an equality test on its name. Read from the source, tests included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("augment", "models", "pipelines", "tune", "cluster", "benchmarks", "tests")


def _is_modality(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "modality") or (
        isinstance(node, ast.Attribute) and node.attr == "modality")


def test_no_equality_test_on_a_modality_name():
    found = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq) for op in node.ops) and (
                        _is_modality(node.left) or any(_is_modality(c) for c in node.comparators)):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, f"branches on a modality's name (ask the modality object instead): {found}"
