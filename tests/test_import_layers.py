"""The import graph of ``src/unikd`` follows the layers of docs/architecture.md: every import points down.

Every ``import`` statement counts, including the ones inside functions (a lazy import is still a
dependency; the graph is built by ``tests/import_graph.py``, which ``benchmarks/code_shape.py`` reads too).
A new package must be placed in ``UNITS`` below; the failure message says so.
"""

from __future__ import annotations

import pytest
from import_graph import FACADE, SRC, file_cycles, graph, imports, module_edges, module_name

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
LEAVES = ("models", "data", "losses", "token", "stats", "cache.read")
ENGINE_LAYER = UNITS["engine.run"][0]  # the lowest floor of the engine


def _unit(module: str) -> str | None:
    best, best_len = None, -1
    for unit, (_, prefixes) in UNITS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = unit, len(prefix)
    return best


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({module_name(p) for p in (SRC / "unikd").rglob("*.py")} - {FACADE})
    unplaced = [m for m in unplaced if _unit(m) is None]
    assert not unplaced, f"place these modules in UNITS of {__file__} (see docs/architecture.md): {unplaced}"


def test_imports_point_down():
    bad = []
    for src, dst, where, line in graph():
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
    bad = [f"{where}:{line} {src} imports {dst}" for src, dst, where, line in graph()
           if _unit(src) in LEAVES and _unit(dst) is not None and UNITS[_unit(dst)][0] >= ENGINE_LAYER]
    assert not bad, "\n".join(bad)


def test_no_cycles_between_units():
    deps: dict[str, set[str]] = {}
    for src, dst, _, _ in graph():
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


def test_the_checker_sees_lazy_and_relativeimports(tmp_path):
    # The checker itself must not be blind: a function-level import and a relative import are both found.
    pkg = SRC / "unikd" / "losses" / "kd.py"
    names = [name for name, _ in imports(pkg, "unikd.losses.kd")]
    assert "unikd.losses._common" in names
    setup_py = SRC / "unikd" / "engine" / "loop" / "parts.py"
    setup = [name for name, _ in imports(setup_py, "unikd.engine.loop.parts")]
    assert "unikd.models" in setup  # imported inside functions there


def test_no_cycles_between_files():
    # Module-level, not only unit-level: a lazy import inside a function is still an edge, so two files that
    # import each other (even one of them lazily, or under TYPE_CHECKING) fail here.
    cycles = file_cycles(module_edges())
    assert not cycles, "import cycles between files:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_lazy_cycle():
    # The finder must not be blind: a -> b -> c -> a is one group, a tree is none.
    assert file_cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]
    assert file_cycles([("a", "b"), ("a", "c"), ("b", "c")]) == []


def test_engine_modules_live_in_rooms():
    # Every engine module sits in one of the sub-packages; only the facade lives at engine/ itself.
    flat = sorted(p.name for p in (SRC / "unikd" / "engine").glob("*.py") if p.name != "__init__.py")
    assert not flat, f"engine/ files outside a room (move them into a sub-package): {flat}"

