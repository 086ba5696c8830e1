"""The import graph of `services/voice_pipeline`, read with `ast` (nothing is imported).

`python tests/unit/import_graph.py` prints which top-level package imports which, and any cycles.
Every import counts, including the ones inside functions: a cycle deferred to call time is still
two packages that cannot be understood (or moved) apart.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "services" / "voice_pipeline"
PACKAGE = "voice_pipeline"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_edges(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (`from a import b` counts a.b if b is one)."""
    paths = {_module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            edges[name].update(t for t in targets if t in paths and t != name)
    return dict(edges)


def top_level(module: str) -> str:
    """`voice_pipeline.asr.stage` -> `asr`; the package's own `__init__` is `voice_pipeline`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def package_edges(edges: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in edges.items():
        for target in targets:
            if top_level(source) != top_level(target):
                packages[top_level(source)].add(top_level(target))
    return dict(packages)


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return sorted(found)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    modules = module_edges(root)
    packages = package_edges(modules)
    for package in sorted(packages):
        print(f"{package:15} -> {', '.join(sorted(packages[package]))}")
    print("package cycles:", cycles(packages) or "none")
    print("module cycles:", cycles(modules) or "none")
