"""The import graph of ``src/unikd`` follows the layers of docs/architecture.md: every import points down.

Every ``import`` statement counts, including the ones inside functions (a lazy import is still a
dependency). A new package must be placed in ``UNITS`` below; the failure message says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# unit -> (layer, module prefixes). Higher layers may import lower ones; a unit may import itself and
# other units of its own layer (no cycles between them). The most specific prefix decides. The engine is
# split into rooms along a run's flow (docs/architecture.md): run/optim, then config, then
# eval/teacher/objective, then loop; its package root is a facade over them.
UNITS: dict[str, tuple[int, tuple[str, ...]]] = {
    "floor": (0, ("unikd.registry", "unikd._atomic", "unikd._optional", "unikd._lock", "unikd._process",
                  "unikd._progress", "unikd._files", "unikd._yaml", "unikd.integrity")),
    "models": (1, ("unikd.models",)),
    "data": (1, ("unikd.data",)),
    "losses": (1, ("unikd.losses",)),
    "token": (1, ("unikd.token",)),
    "stats": (1, ("unikd.stats",)),
    "cache.read": (1, ("unikd.cache",)),
    "engine.run": (2, ("unikd.engine.run",)),
    "engine.optim": (2, ("unikd.engine.optim",)),
    "engine.config": (3, ("unikd.engine.config",)),
    "engine.eval": (4, ("unikd.engine.eval",)),
    "engine.teacher": (4, ("unikd.engine.teacher",)),
    "engine.objective": (4, ("unikd.engine.objective",)),
    "engine.loop": (5, ("unikd.engine.loop",)),
    "engine": (6, ("unikd.engine",)),  # the package root only: every module lives in a room above
    "cache.build": (7, ("unikd.cache.build",)),
    "bench": (8, ("unikd.bench",)),
    "lm": (8, ("unikd.lm",)),
    "demo": (8, ("unikd.demo",)),
    "cli": (9, ("unikd.cli", "unikd.__main__")),
}
# The package root re-exports the public API of every layer (it is the facade, not a layer).
FACADE = "unikd"
LEAVES = ("models", "data", "losses", "token", "stats", "cache.read")
ENGINE_LAYER = UNITS["engine.run"][0]  # the lowest floor of the engine

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _unit(module: str) -> str | None:
    best, best_len = None, -1
    for unit, (_, prefixes) in UNITS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = unit, len(prefix)
    return best


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
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
            modules = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            others = [a.name for a in node.names if f"{target}.{a.name}" not in modules]
            found += [(m, node.lineno) for m in modules]
            if others and not (target == FACADE and others == ["__version__"]):
                found.append((target, node.lineno))
    return [(name, line) for name, line in found if name == "unikd" or name.startswith("unikd.")]


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _graph() -> list[tuple[str, str, str, int]]:
    """(importing module, imported module, file, line) for every unikd import in src/unikd."""
    edges = []
    for path in sorted((SRC / "unikd").rglob("*.py")):
        module = _module_name(path)
        for target, line in _imports(path, module):
            edges.append((module, target, str(path.relative_to(SRC.parent)), line))
    return edges


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({_module_name(p) for p in (SRC / "unikd").rglob("*.py")} - {FACADE})
    unplaced = [m for m in unplaced if _unit(m) is None]
    assert not unplaced, f"place these modules in UNITS of {__file__} (see docs/architecture.md): {unplaced}"


def test_imports_point_down():
    bad = []
    for src, dst, where, line in _graph():
        if src == FACADE or dst == FACADE:
            if dst == FACADE and src != FACADE:
                bad.append(f"{where}:{line} {src} imports the package root (import from the layer instead)")
            continue
        su, du = _unit(src), _unit(dst)
        if su is None or du is None or su == du:
            continue
        if UNITS[du][0] > UNITS[su][0]:
            bad.append(f"{where}:{line} {src} ({su}, layer {UNITS[su][0]}) imports {dst} ({du}, layer "
                       f"{UNITS[du][0]})")
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_leaves_never_import_engine_bench_cli_or_lm():
    bad = [f"{where}:{line} {src} imports {dst}" for src, dst, where, line in _graph()
           if _unit(src) in LEAVES and _unit(dst) is not None and UNITS[_unit(dst)][0] >= ENGINE_LAYER]
    assert not bad, "\n".join(bad)


def test_no_cycles_between_units():
    deps: dict[str, set[str]] = {}
    for src, dst, _, _ in _graph():
        su, du = _unit(src), _unit(dst)
        if su and du and su != du:
            deps.setdefault(su, set()).add(du)
    seen: dict[str, int] = {}

    def visit(unit: str, path: list[str]) -> None:
        if seen.get(unit) == 1:
            pytest.fail(f"import cycle between units: {' -> '.join(path + [unit])}")
        if seen.get(unit) == 2:
            return
        seen[unit] = 1
        for nxt in sorted(deps.get(unit, ())):
            visit(nxt, path + [unit])
        seen[unit] = 2

    for unit in sorted(deps):
        visit(unit, [])


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    # The checker itself must not be blind: a function-level import and a relative import are both found.
    pkg = SRC / "unikd" / "losses" / "kd.py"
    names = [name for name, _ in _imports(pkg, "unikd.losses.kd")]
    assert "unikd.losses._common" in names
    setup_py = SRC / "unikd" / "engine" / "loop" / "parts.py"
    setup = [name for name, _ in _imports(setup_py, "unikd.engine.loop.parts")]
    assert "unikd.models" in setup  # imported inside functions there


def _file_cycles(edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def test_no_cycles_between_files():
    # Module-level, not only unit-level: a lazy import inside a function is still an edge, so two files that
    # import each other (even one of them lazily, or under TYPE_CHECKING) fail here.
    edges = [(src, dst) for src, dst, _, _ in _graph() if src != FACADE and dst != FACADE and src != dst]
    cycles = _file_cycles(edges)
    assert not cycles, "import cycles between files:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_lazy_cycle():
    # The finder must not be blind: a -> b -> c -> a is one group, a tree is none.
    assert _file_cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]
    assert _file_cycles([("a", "b"), ("a", "c"), ("b", "c")]) == []


def test_engine_modules_live_in_rooms():
    # Every engine module sits in one of the sub-packages; only the facade lives at engine/ itself.
    flat = sorted(p.name for p in (SRC / "unikd" / "engine").glob("*.py") if p.name != "__init__.py")
    assert not flat, f"engine/ files outside a room (move them into a sub-package): {flat}"

