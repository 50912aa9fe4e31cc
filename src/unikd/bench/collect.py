"""Finding run folders under the paths a report is given, and loading every finished one."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from unikd.bench.results import RUN_FILES, RunResult, load_run

__all__ = ["collect", "find_run_dirs"]


def _is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_FILES)


def find_run_dirs(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Run folders among ``paths``: each path is a run folder or is searched recursively for them
    (so a bench output folder can be given directly)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ValueError(
                f"run folder {str(p)!r} does not exist or is not a folder; give run folders "
                "(with config.yaml / metrics.jsonl / summary.json) or a bench output folder"
            )
        if _is_run_dir(p):
            found.append(p)
            continue
        for root, dirs, _files in os.walk(p):
            dirs.sort()
            r = Path(root)
            if _is_run_dir(r):
                found.append(r)
                dirs.clear()  # a run folder has no nested runs
    unique = list(dict.fromkeys(d.resolve() for d in found))
    if not unique:
        raise ValueError(
            f"no run folders found under {[str(p) for p in paths]}; a run folder holds "
            "config.yaml, metrics.jsonl or summary.json"
        )
    return unique


def collect(paths: list[str | os.PathLike[str]]) -> list[RunResult]:
    """Results of every run folder under ``paths`` that has finished at least one epoch."""
    results = [r for r in (load_run(d) for d in find_run_dirs(paths)) if r is not None]
    seen: dict[tuple[str, str, str, int], Path] = {}
    for r in results:
        key = (r.role, r.track, r.label, r.seed)
        if key in seen:
            # Two different runs claim the same cell; averaging them as seeds would be wrong, so keep them
            # apart under a label that names the folder.
            warnings.warn(
                f"runs {seen[key]} and {r.run_dir} both are {r.track}/{r.label}/seed{r.seed}; "
                f"reporting the second as {r.label}[{r.run_dir.parent.name}]",
                stacklevel=2,
            )
            r.label = f"{r.label}[{r.run_dir.parent.name}]"
        seen[(r.role, r.track, r.label, r.seed)] = r.run_dir
    return results
