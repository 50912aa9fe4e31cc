"""Run a bench grid: teachers first, then every student run, one after another, each in its own
``python -m unikd train ... out_dir=RUN resume=auto`` subprocess.

Why subprocesses: a crash (or an out-of-memory kill) of one run leaves the grid going, and every run starts
from a clean interpreter, so the runs cannot influence each other (global RNG, thread settings, caches).
Resume is exact because each run resumes from its own ``last.pt``; runs whose ``summary.json`` says
``finished: true`` are skipped. Killing the grid (Ctrl-C / SIGTERM) stops the current run too, and on Linux
the child also dies when the grid process is killed outright (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from unikd._lock import FolderLock
from unikd.bench.report import ReportFiles, build_report
from unikd.bench.results import BENCH_RECORD, is_finished, load_run, read_json, write_text_atomic
from unikd.bench.spec import BenchSpec, RunPlan, expand
from unikd.bench.values import format_value

LOCK = ".bench.lock"


class GridInterrupted(Exception):
    """The grid got SIGINT/SIGTERM; the current run was stopped and can be resumed."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def acquire_lock(out_dir: Path) -> FolderLock:
    """Refuse to run two grids into one folder at once (they would train the same runs twice)."""
    return FolderLock(out_dir, LOCK, "unikd bench", fix="Wait for that bench, or stop it.").acquire()


def fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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


class _Eta:
    """Time left: remaining epochs of each run times the measured seconds per epoch of the most similar
    runs (same track and method, else same role and track, else same role). A run's seconds per epoch is
    its whole subprocess time (``bench_seconds``: start-up, data loading and evaluation included) over its
    epochs."""

    def __init__(self, plans: list[RunPlan], epochs: dict[str, int]) -> None:
        self.plans, self.epochs = plans, epochs

    def left(self, done: set[str]) -> float:
        measured: dict[tuple[Any, ...], list[float]] = {}
        todo: list[tuple[RunPlan, int]] = []
        for p in self.plans:
            r = load_run(p.out_dir)
            spe = math.nan
            record = read_json(p.out_dir / BENCH_RECORD) or {}
            if r is not None and r.finished and r.epochs > 0:
                secs = float(record.get("bench_seconds") or r.wall_seconds)
                spe = secs / r.epochs
            if math.isfinite(spe):
                for key in ((p.role, p.track, p.label), (p.role, p.track), (p.role,)):
                    measured.setdefault(key, []).append(spe)
            if str(p.out_dir) not in done and p.copy_of is None:
                todo.append((p, self.epochs[str(p.out_dir)] - (r.epochs if r else 0)))
        total = 0.0
        for p, n_epochs in todo:
            for key in ((p.role, p.track, p.label), (p.role, p.track), (p.role,)):
                if key in measured:
                    total += max(n_epochs, 0) * sum(measured[key]) / len(measured[key])
                    break
            else:
                return math.nan
        return total


def _run_one(plan: RunPlan, cmd: list[str], log_path: Path) -> int:
    """Run one training subprocess, output appended to ``log_path``; stop it if the grid is interrupted."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} unikd bench: {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # train.log shows progress as it happens
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


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

    def interrupt(signum: int, _frame: Any) -> None:
        raise GridInterrupted(signal.Signals(signum).name)

    for s in old_handlers:
        signal.signal(s, interrupt)
    try:
        if spec.source:
            write_text_atomic(out / "spec.yaml", Path(spec.source).read_text(encoding="utf-8"))
        return _loop(spec, plans, cfg_path, epochs, plots, say, after_run)
    except GridInterrupted as e:
        say(f"[bench] interrupted ({e}); the current run was stopped. Run the same command again to resume.")
        return 130
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        lock.release()


def _hash(cfg_path: str, overrides: dict[str, Any]) -> str:
    from unikd.bench.spec import resolved_hash

    return resolved_hash(cfg_path, overrides)


def _teacher_cache(p: RunPlan, cfg_path: str, say: Callable[[str], None]) -> str | None:
    """Build (or reuse) the teacher-output cache for run ``p``; None (after saying why) when it fails.

    The cache is keyed by what the run's training stream depends on (data, seed, batch, augmentation,
    precision) and not by the method, so every teacher method of one seed shares it: the teacher runs once
    per seed instead of once per run. Built in this process (the build is resumable and idempotent).
    """
    try:
        from unikd.cache.build import build_teacher_cache
        from unikd.engine.config import load_config
    except ImportError as e:
        say(f"[bench] teacher_cache: true needs unikd.cache ({e}); set it to false to run live teachers")
        return None
    # The cache module picks the folder ($UNIKD_CACHE/teacher-cache/<teacher>-seed<seed>-<key>); its key
    # hashes the stream identity, so every run that can share a cache finds the same one.
    cfg = load_config(cfg_path, p.override_args())
    try:
        folder = build_teacher_cache(cfg, None, show_progress=False)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        say(f"[bench] FAILED teacher cache for {p.name}: {e}")
        return None
    return str(folder)


def _copy_run(p: RunPlan) -> bool:
    """Copy the result files of the identical run ``p.copy_of`` into ``p.out_dir``; False if it is not done.

    config.yaml is copied as is (its out_dir names the folder that really trained); checkpoints are not
    copied (they stay in that folder)."""
    src = Path(str(p.copy_of))
    if not is_finished(src):
        return False
    p.out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        if (src / name).is_file():
            write_text_atomic(p.out_dir / name, (src / name).read_text(encoding="utf-8"))
    record = {**p.record(), "copied_from": str(src)}
    write_text_atomic(p.out_dir / BENCH_RECORD, json.dumps(record, indent=1))
    return True


def _report(spec: BenchSpec, *, plots: bool) -> ReportFiles | None:
    """Rebuild the grid's report from its run folders; None while no run has finished an epoch."""
    paths = [d for d in (spec.out_dir / "runs", spec.out_dir / "teachers") if d.is_dir()]
    try:
        return (
            build_report(paths, spec.out_dir, title=f"Benchmark {spec.name}", plots=plots) if paths else None
        )
    except ValueError:  # no run folder with results yet
        return None


def _loop(
    spec: BenchSpec,
    plans: list[RunPlan],
    cfg_path: str,
    epochs: dict[str, int],
    plots: bool,
    say: Callable[[str], None],
    after_run: Callable[[RunPlan, int], None] | None,
) -> int:
    total = len(plans)
    start = time.monotonic()
    eta = _Eta(plans, epochs)
    done = {str(p.out_dir) for p in plans if is_finished(p.out_dir)}
    failed: list[str] = []
    bad_teachers: set[str] = set()
    if done:
        say(f"[bench] resuming: {len(done)}/{total} runs already finished, skipping them")
    for p in plans:
        if str(p.out_dir) in done:
            continue
        if p.teacher is not None and p.teacher in bad_teachers:
            say(f"[bench] skip {p.name}: its teacher did not finish")
            failed.append(p.name)
            continue
        if p.copy_of is not None:
            if _copy_run(p):
                done.add(str(p.out_dir))
                say(f"[bench] {p.name}: same settings as {p.copy_of}, copied its results (not trained again)")
            else:
                failed.append(p.name)
                say(f"[bench] skip {p.name}: the run it copies ({p.copy_of}) did not finish")
            continue
        left = eta.left(done)
        say(
            f"[bench] {len(done)}/{total} runs finished | elapsed {fmt_seconds(time.monotonic() - start)} | "
            f"left ~{fmt_seconds(left)} | running {p.name}"
        )
        p.out_dir.mkdir(parents=True, exist_ok=True)
        cmd = p.command(cfg_path)
        if spec.teacher_cache and p.teacher is not None:
            folder = _teacher_cache(p, cfg_path, say)
            if folder is None:
                failed.append(p.name)
                continue
            cmd.append(f"teacher.cache={format_value(folder)}")
        spent = float((read_json(p.out_dir / BENCH_RECORD) or {}).get("bench_seconds") or 0.0)
        record = {**p.record(), "command": cmd[1:], "bench_seconds": spent}
        write_text_atomic(p.out_dir / BENCH_RECORD, json.dumps(record, indent=1))
        t0 = time.monotonic()
        try:
            rc = _run_one(p, cmd, p.out_dir / "train.log")
        finally:  # the subprocess time of every attempt, for the time-left estimate
            record["bench_seconds"] = spent + time.monotonic() - t0
            write_text_atomic(p.out_dir / BENCH_RECORD, json.dumps(record, indent=1))
        if rc == 0 and is_finished(p.out_dir):
            done.add(str(p.out_dir))
            say(f"[bench] finished {p.name} in {fmt_seconds(time.monotonic() - t0)}")
        else:
            failed.append(p.name)
            if p.role == "teacher":
                bad_teachers.add(str(p.out_dir))
            say(f"[bench] FAILED {p.name} (exit code {rc}); see {p.out_dir / 'train.log'}; going on")
        if after_run is not None:
            after_run(p, rc)
        if p.role == "student":  # keep results.csv/report.md current (cheap; plots only at the end)
            _report(spec, plots=False)
    say(f"[bench] {len(done)}/{total} runs finished | elapsed {fmt_seconds(time.monotonic() - start)}")
    files = _report(spec, plots=plots)
    if files is not None:
        say(f"[bench] wrote {files.csv}, {files.markdown}" + "".join(f", {p}" for p in files.plots))
        if files.plot_note and plots:
            say(f"[bench] {files.plot_note}")
    if failed:
        say(f"[bench] {len(failed)} runs did not finish: {', '.join(failed)}")
        return 1
    return 0
