"""Run a bench grid: teachers first, then every student run, each in its own
``python -m unikd train ... out_dir=RUN resume=auto`` subprocess; ``jobs`` of them at a time (default one
after another), teacher-output caches built by ``python -m unikd cache-teacher`` subprocesses.

Why subprocesses: a crash (or an out-of-memory kill) of one run leaves the grid going, and every run starts
from a clean interpreter, so the runs cannot influence each other (global RNG, thread settings, caches).
Resume is exact because each run resumes from its own ``last.pt``; runs whose ``summary.json`` says
``finished: true`` are skipped. Killing the grid (Ctrl-C / SIGTERM) stops the current run too, and on Linux
the child also dies when the grid process is killed outright (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from unikd._lock import FolderLock
from unikd.bench.grid import Grid
from unikd.bench.pool import JobPool
from unikd.bench.results import BENCH_RECORD, read_json, write_text_atomic
from unikd.bench.spec import BenchSpec, RunPlan, expand

LOCK = ".bench.lock"


def acquire_lock(out_dir: Path) -> FolderLock:
    """Refuse to run two grids into one folder at once (they would train the same runs twice)."""
    return FolderLock(out_dir, LOCK, "unikd bench", fix="Wait for that bench, or stop it.").acquire()


def config_path(spec: BenchSpec) -> str:
    """The CONFIG file given to ``unikd train``: the spec's base, or an empty base.yaml in the output."""
    if spec.base is not None:
        return spec.base
    path = spec.out_dir / "base.yaml"
    if not path.is_file():
        write_text_atomic(
            path, "# no base config in the bench spec: every setting is a key=value override\n{}\n"
        )
    return str(path)


def check_plans(plans: list[RunPlan], cfg_path: str) -> dict[str, int]:
    """Validate every run's config up front (a typo fails now, not an hour in) and refuse to reuse a run
    folder that was made with different settings. Returns each run's epoch count."""
    from unikd.engine.config import load_config

    epochs: dict[str, int] = {}
    for p in plans:
        try:
            cfg = load_config(cfg_path, p.override_args())
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"run {p.name}: invalid config: {e}") from None
        epochs[str(p.out_dir)] = int(cfg.epochs)
        old = read_json(p.out_dir / BENCH_RECORD)
        new = json.loads(json.dumps(p.record()))
        if old is not None and {k: old.get(k) for k in new} != new:
            raise ValueError(
                f"run folder {p.out_dir} was made by a different spec (settings differ from the "
                f"current spec); use another out_dir, or delete that folder to rerun it"
            )
    return epochs


def run_grid(
    spec: BenchSpec,
    *,
    dry_run: bool = False,
    plots: bool = True,
    stream: TextIO | None = None,
    after_run: Callable[[RunPlan, int], None] | None = None,
) -> int:
    """Run (or resume) the grid of ``spec``; write ``results.csv``, ``report.md`` and plots into its out_dir.

    Returns 0 when every run finished, 1 when some failed (the others still ran), 130 when interrupted.
    ``after_run(plan, returncode)`` is called after each run that was started (for tests and tooling).
    ``spec.jobs`` runs train at once, each with ``spec.threads`` torch threads (default: the cores divided
    by the jobs when jobs > 1; the torch default otherwise).
    """
    stream = stream or sys.stdout

    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)

    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = config_path(spec)
    plans = expand(spec, hash_fn=lambda base, over: _hash(cfg_path, over))
    epochs = check_plans(plans, cfg_path)
    if dry_run:
        for p in plans:
            what = f"copy of {p.copy_of}" if p.copy_of else " ".join(p.command(cfg_path)[1:])
            say(f"{p.name}: {what}")
        say(
            f"{len(plans)} runs ({sum(p.role == 'teacher' for p in plans)} teacher(s), "
            f"{sum(p.copy_of is not None for p in plans)} copies of identical runs); "
            "nothing started (--dry-run)"
        )
        return 0
    lock = acquire_lock(out)
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop: list[int] = []

    def interrupt(signum: int, _frame: Any) -> None:
        # Only record the request: the scheduler notices it within a poll interval, stops the running jobs
        # (a training run saves last.pt) and returns. Raising here instead could land inside subprocess
        # bookkeeping (Popen, poll) and leave a child untracked.
        stop.append(signum)

    for s in old_handlers:
        signal.signal(s, interrupt)
    threads = spec.threads
    if threads is None and spec.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // spec.jobs)
    pool = JobPool(spec.jobs, threads=threads)
    try:
        if spec.source:
            write_text_atomic(out / "spec.yaml", Path(spec.source).read_text(encoding="utf-8"))
        return Grid(spec, plans, cfg_path, epochs, say, after_run, pool, stop=lambda: bool(stop)).run(plots)
    finally:
        pool.stop_all()  # a no-op unless something went wrong with jobs still running
        for s, h in old_handlers.items():
            signal.signal(s, h)
        lock.release()


def _hash(cfg_path: str, overrides: dict[str, Any]) -> str:
    from unikd.bench.spec import resolved_hash

    return resolved_hash(cfg_path, overrides)


