"""The import graph, read from the source: no package imports one above it, and no circle of
modules, inside a package or across (function-level imports count too)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("augment", "models", "pipelines", "tune", "cluster")
# what each top-level package may import (DESIGN.md: augment and models are leaves)
ALLOWED = {
    "augment": set(),
    "models": set(),
    "pipelines": {"augment", "models"},
    "tune": {"augment", "models", "pipelines"},
    "cluster": {"augment", "models", "pipelines", "tune"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out["augtrain." + ".".join(parts)] = path
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            for target in targets:
                if target.startswith("augtrain.") and target != name:
                    while target not in modules and "." in target:
                        target = target.rpartition(".")[0]
                    if target in modules:
                        graph[name].add(target)
    return graph


def test_no_package_imports_upward():
    upward = []
    for name, targets in _graph().items():
        package = name.split(".")[1]
        for target in targets:
            other = target.split(".")[1]
            if other != package and other not in ALLOWED[package]:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_circle_of_modules():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_graph_sees_the_imports():
    """The reader finds real edges (a test that could not fail would prove nothing)."""
    graph = _graph()
    assert "augtrain.augment.registry" in graph["augtrain.augment.policy"]
    assert "augtrain.pipelines.train.engine" in graph["augtrain.pipelines.finetune.model"]
