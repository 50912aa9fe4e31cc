"""The import graph of a source tree, from its ``import`` statements (``ast`` only, no pytest), so that the
layering test and ``benchmarks/code_shape.py`` read one graph.

Every ``import`` statement counts, including the ones inside functions (a lazy import is still a
dependency) and relative ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# The package root re-exports the public API of every layer (it is the facade, not a layer).
FACADE = "unikd"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(name: str, src: Path = SRC) -> bool:
    rel = Path(*name.split("."))
    return (src / rel).with_suffix(".py").is_file() or (src / rel / "__init__.py").is_file()


def imports(path: Path, module: str, src: Path = SRC) -> list[tuple[str, int]]:
    """Absolute names of the unikd modules ``path`` imports, with line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from unikd.cache import build`` imports the submodule unikd.cache.build; other names come
            # from the package itself (the root's __version__ is a constant, not a dependency on the facade)
            modules = [f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}", src)]
            others = [a.name for a in node.names if f"{target}.{a.name}" not in modules]
            found += [(m, node.lineno) for m in modules]
            if others and not (target == FACADE and others == ["__version__"]):
                found.append((target, node.lineno))
    return [(name, line) for name, line in found if name == "unikd" or name.startswith("unikd.")]


def graph(src: Path = SRC) -> list[tuple[str, str, str, int]]:
    """(importing module, imported module, file, line) for every unikd import in ``src/unikd``."""
    edges = []
    for path in sorted((src / "unikd").rglob("*.py")):
        module = module_name(path, src)
        for target, line in imports(path, module, src):
            edges.append((module, target, str(path.relative_to(src.parent)), line))
    return edges


def file_cycles(edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph_: dict[str, set[str]] = {}
    for a, b in edges:
        graph_.setdefault(a, set()).add(b)
        graph_.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph_[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph_):
        if v not in index:
            connect(v)
    return groups


def module_edges(src: Path = SRC) -> list[tuple[str, str]]:
    """The file-to-file edges of ``graph``, without the facade and self-imports (what a cycle is made of)."""
    return [(a, b) for a, b, _, _ in graph(src) if a != FACADE and b != FACADE and a != b]
