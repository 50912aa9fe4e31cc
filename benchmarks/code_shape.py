"""The shape of the source tree: per folder of ``src/unikd`` the files, lines, largest file and longest
function, and the import cycles between files (the graph of ``tests/import_graph.py``, which the layering
test reads too; every import counts, function-level ones included). Standard library only.

    python benchmarks/code_shape.py                      # this checkout
    python benchmarks/code_shape.py --src /tmp/old/src   # another tree, e.g. from `git archive REV src`
    python benchmarks/code_shape.py --max-lines 300 --max-function 80 --check unikd/engine

``--check FOLDER`` exits 1 when a file of that folder (recursively) is longer than ``--max-lines`` or a
function longer than ``--max-function`` lines, listing them.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the import graph shared with tests/test_import_layers.py
from import_graph import file_cycles, module_edges  # noqa: E402


@dataclass
class FileShape:
    path: str  # relative to src/
    lines: int
    longest: tuple[int, str] = (0, "")  # (lines, qualified function name)


@dataclass
class Folder:
    files: list[FileShape] = field(default_factory=list)

    def row(self, name: str) -> str:
        lines = sum(f.lines for f in self.files)
        big = max(self.files, key=lambda f: f.lines)
        fn = max(self.files, key=lambda f: f.longest[0])
        return (f"| {name} | {len(self.files)} | {lines} | {big.lines} `{Path(big.path).name}` | "
                f"{fn.longest[0]} `{Path(fn.path).name}:{fn.longest[1]}` |")


def functions(tree: ast.AST, prefix: str = "") -> list[tuple[int, str]]:
    """(lines, qualified name) of every function and method, nested ones included (decorators excluded)."""
    out = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node.end_lineno - node.lineno + 1, f"{prefix}{node.name}"))
            out += functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            out += functions(node, f"{prefix}{node.name}.")
        else:
            out += functions(node, prefix)
    return out


def shape(path: Path, src: Path) -> FileShape:
    text = path.read_text(encoding="utf-8")
    fns = functions(ast.parse(text, filename=str(path)))
    return FileShape(str(path.relative_to(src)), len(text.splitlines()), max(fns, default=(0, "")))


def folders(src: Path) -> dict[str, Folder]:
    """Every folder of src/unikd (its own files) plus each top-level package with all its sub-folders."""
    out: dict[str, Folder] = {}
    for path in sorted((src / "unikd").rglob("*.py")):
        f = shape(path, src)
        rel = path.parent.relative_to(src)
        out.setdefault(str(rel), Folder()).files.append(f)
        if len(rel.parts) > 2:  # a sub-package: also counted in its top-level package's total
            out.setdefault(str(Path(*rel.parts[:2])) + " (all)", Folder()).files.append(f)
    for key in [k for k in out if not k.endswith(" (all)")]:
        if len(Path(key).parts) == 2 and any(k.startswith(key + "/") for k in out):
            out[key + " (all)"].files[:0] = out[key].files
    return dict(sorted(out.items()))


def report(src: Path) -> str:
    rows = ["| folder | files | lines | largest file | longest function |", "|---|---:|---:|---|---|"]
    rows += [folder.row(name) for name, folder in folders(src).items()]
    cycles = file_cycles(module_edges(src))
    rows += ["", f"import cycles between files: {len(cycles)}"]
    rows += ["  " + " <-> ".join(c) for c in cycles]
    return "\n".join(rows)


def oversized(src: Path, folder: str, max_lines: int, max_function: int) -> list[str]:
    bad = []
    for path in sorted((src / folder).rglob("*.py")):
        f = shape(path, src)
        if f.lines > max_lines:
            bad.append(f"{f.path}: {f.lines} lines (> {max_lines})")
        if f.longest[0] > max_function:
            bad.append(f"{f.path}: {f.longest[1]} has {f.longest[0]} lines (> {max_function})")
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=ROOT / "src", help="the folder holding unikd/ (default: src)")
    p.add_argument("--check", metavar="FOLDER", help="e.g. unikd/engine: fail on files/functions too long")
    p.add_argument("--max-lines", type=int, default=300)
    p.add_argument("--max-function", type=int, default=80)
    args = p.parse_args(argv)
    src = args.src.resolve()
    if not (src / "unikd").is_dir():
        p.error(f"{src} has no unikd/ folder; pass --src <folder holding unikd/>")
    print(report(src))
    if args.check:
        bad = oversized(src, args.check, args.max_lines, args.max_function)
        print(f"\n{args.check}: " + ("; ".join(bad) if bad else
                                      f"no file over {args.max_lines} lines, no function over "
                                      f"{args.max_function}"))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
