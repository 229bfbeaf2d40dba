"""The package's import graph, function-level imports included: no cycles, and every layer imports only
the layers below it (arch <- formats <- models_* <- flows <- cli), so the layout keeps its shape."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"package": "vrconvert", "converter": "vrconvert.converter", "models_torch": "vrconvert.models_torch"}
FOLDERS |= {"models_tf": "vrconvert.models_tf", "cli": "vrconvert.cli"}
# Lower number = lower layer; a module may import its own layer and those below.
LAYERS = {
    "vrconvert.converter.errors": 0,
    "vrconvert.converter.limits": 0,
    "vrconvert.converter.arch": 1,
    "vrconvert.converter.formats": 2,
    "vrconvert.models_torch": 3,
    "vrconvert.models_tf": 3,
    "vrconvert.converter": 4,  # the flows: conversion, parity, deploy, video, evaluate
    "vrconvert.cli": 5,
    "vrconvert": 5,
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules `name` imports anywhere in its body, resolved to the longest known module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            candidates = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and known[candidate].name != "__init__.py":
                targets.add(candidate)
    return targets


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _layer(module: str) -> int:
    return LAYERS[max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)]


def test_no_import_cycles(graph):
    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_layers_point_down(graph):
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert not upward, "imports that point up: " + ", ".join(upward)


def test_the_walk_sees_function_level_imports(graph):
    """The check must not be blind to lazy imports: the flows import the Keras builders inside functions."""
    assert "vrconvert.models_tf.weights" in graph["vrconvert.converter.conversion.convert"]
