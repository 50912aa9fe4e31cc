"""The bench scheduler: which run (or teacher-output cache build) can start now, what to do when one ends,
and the time-left estimate.

Order: the plans' order (teachers first). A student run waits for its teacher; with ``teacher_cache`` it
also waits for the cache of its (teacher, data, seed) stream, which the first run that needs it builds as
its own job, so the other seeds' runs keep the remaining slots busy meanwhile. With one slot the grid runs
exactly one thing after another, as before.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unikd.bench.pool import Job, JobPool
from unikd.bench.report import ReportFiles, build_report
from unikd.bench.results import BENCH_RECORD, is_finished, load_run, read_json, write_text_atomic
from unikd.bench.spec import BenchSpec, RunPlan
from unikd.bench.values import format_value


def fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"



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
            build_report(
                paths,
                spec.out_dir,
                title=f"Benchmark {spec.name}",
                plots=plots,
                comparisons=spec.comparisons,
            )
            if paths
            else None
        )
    except ValueError:  # no run folder with results yet
        return None




def _stream_key(cfg_path: str, plan: RunPlan) -> str:
    """What a teacher-output cache depends on (teacher, data, seed, epochs, precision), not the method."""
    from unikd.engine.config import load_config

    cfg = load_config(cfg_path, plan.override_args())
    stream = {
        "data": cfg.to_dict()["data"],
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
        "device": cfg.device,
        "teacher": [cfg.teacher.model, cfg.teacher.checkpoint],
    }
    return hashlib.sha256(json.dumps(stream, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Grid:
    """Runs ``plans`` through ``pool``; see the module docstring."""

    def __init__(
        self,
        spec: BenchSpec,
        plans: list[RunPlan],
        cfg_path: str,
        epochs: dict[str, int],
        say: Callable[[str], None],
        after_run: Callable[[RunPlan, int], None] | None,
        pool: JobPool,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.spec, self.plans, self.cfg_path, self.say, self.after_run = spec, plans, cfg_path, say, after_run
        self.pool = pool
        self.stop = stop  # true once SIGINT/SIGTERM asked the grid to stop
        self.eta = _Eta(plans, epochs)
        self.done = {str(p.out_dir) for p in plans if is_finished(p.out_dir)}
        self.failed: list[str] = []
        self.failed_ids: set[str] = set()
        self.caches: dict[str, str | None] = {}  # stream key -> folder (None: the build failed)
        self.start = time.monotonic()

    # ------------------------------------------------------------------------------------------ loop

    def run(self, plots: bool) -> int:
        spec, say = self.spec, self.say
        total = len(self.plans)
        if self.done:
            say(f"[bench] resuming: {len(self.done)}/{total} runs already finished, skipping them")
        pending = [p for p in self.plans if str(p.out_dir) not in self.done]
        while pending or self.pool.running:
            if self.stop():
                self.pool.stop_all()
                say("[bench] interrupted; the running jobs were stopped. Run the same command to resume.")
                return 130
            started = False
            for p in list(pending):
                if self.pool.free() == 0:
                    break
                state = self._try_start(p)
                if state in ("started", "settled"):
                    pending.remove(p)
                    started = True
                if state == "started" and self.pool.slots == 1:
                    break
                if state == "wait" and self.pool.slots == 1:
                    break  # one slot: strictly in plan order
            if self.pool.running:
                self.pool.wait_any(stop=self.stop)
            elif not started:
                for p in pending:  # nothing can start and nothing runs: their dependencies failed
                    self._fail(p, "a run or cache it needs did not finish")
                pending = []
        elapsed = fmt_seconds(time.monotonic() - self.start)
        say(f"[bench] {len(self.done)}/{total} runs finished | elapsed {elapsed}")
        files = _report(spec, plots=plots)
        if files is not None:
            say(f"[bench] wrote {files.csv}, {files.markdown}" + "".join(f", {p}" for p in files.plots))
            if files.plot_note and plots:
                say(f"[bench] {files.plot_note}")
        if self.failed:
            say(f"[bench] {len(self.failed)} runs did not finish: {', '.join(self.failed)}")
            return 1
        return 0

    def _fail(self, p: RunPlan, why: str) -> None:
        self.failed.append(p.name)
        self.failed_ids.add(str(p.out_dir))
        self.say(f"[bench] skip {p.name}: {why}")

    def _try_start(self, p: RunPlan) -> str:
        """"started" (a job for ``p`` or its cache began), "settled" (copied or failed without a job),
        or "wait" (a dependency is still running)."""
        if p.copy_of is not None:
            if str(p.copy_of) in self.failed_ids:
                self._fail(p, f"the run it copies ({p.copy_of}) did not finish")
                return "settled"
            if not _copy_run(p):
                return "wait"
            self.done.add(str(p.out_dir))
            self.say(f"[bench] {p.name}: same settings as {p.copy_of}, copied its results (not retrained)")
            return "settled"
        if p.teacher is not None:
            if p.teacher in self.failed_ids:
                self._fail(p, "its teacher did not finish")
                return "settled"
            if p.teacher not in self.done:
                return "wait"
        extra: list[str] = []
        if self.spec.teacher_cache and p.teacher is not None:
            key = _stream_key(self.cfg_path, p)
            if key not in self.caches:
                self._start_cache(p, key)
                return "wait"
            folder = self.caches[key]
            if folder == "building":
                return "wait"
            if folder is None:
                self._fail(p, "its teacher-output cache could not be built")
                return "settled"
            extra = [f"teacher.cache={format_value(folder)}"]
        self._start_run(p, extra)
        return "started"

    # ------------------------------------------------------------------------------------------ jobs

    def _start_cache(self, p: RunPlan, key: str) -> None:
        logs = self.spec.out_dir / "cache-logs"
        record = logs / f"{key}.json"
        cmd = [
            sys.executable, "-m", "unikd", "cache-teacher", self.cfg_path, *p.override_args(),
            "--no-progress", "--record", str(record),
        ]
        self.caches[key] = "building"

        def on_end(rc: int) -> None:
            info = read_json(record) if rc == 0 else None
            self.caches[key] = str(info["folder"]) if info and info.get("folder") else None
            if self.caches[key] is None:
                self.say(f"[bench] FAILED teacher cache for {p.name} (exit code {rc}); see {logs / key}.log")

        self.say(f"[bench] building the teacher-output cache for {p.name} (shared by its seed's runs)")
        self.pool.start(Job(key, cmd, logs / f"{key}.log", on_end))

    def _start_run(self, p: RunPlan, extra: list[str]) -> None:
        left = self.eta.left(self.done) / self.pool.slots
        self.say(
            f"[bench] {len(self.done)}/{len(self.plans)} runs finished | elapsed "
            f"{fmt_seconds(time.monotonic() - self.start)} | left ~{fmt_seconds(left)} | running {p.name}"
        )
        p.out_dir.mkdir(parents=True, exist_ok=True)
        cmd = p.command(self.cfg_path) + extra
        spent = float((read_json(p.out_dir / BENCH_RECORD) or {}).get("bench_seconds") or 0.0)
        record = {**p.record(), "command": cmd[1:], "bench_seconds": spent}
        write_text_atomic(p.out_dir / BENCH_RECORD, json.dumps(record, indent=1))

        def on_end(rc: int) -> None:
            elapsed = time.monotonic() - job.started
            record["bench_seconds"] = spent + elapsed  # every attempt's time, for the time-left estimate
            write_text_atomic(p.out_dir / BENCH_RECORD, json.dumps(record, indent=1))
            if rc == 0 and is_finished(p.out_dir):
                self.done.add(str(p.out_dir))
                self.say(f"[bench] finished {p.name} in {fmt_seconds(elapsed)}")
            else:
                self.failed.append(p.name)
                self.failed_ids.add(str(p.out_dir))
                self.say(f"[bench] FAILED {p.name} (exit code {rc}); see {p.out_dir / 'train.log'}; going on")
            if self.after_run is not None:
                self.after_run(p, rc)
            if p.role == "student":  # keep results.csv/report.md current (cheap; plots only at the end)
                _report(self.spec, plots=False)

        job = Job(str(p.out_dir), cmd, p.out_dir / "train.log", on_end)
        self.pool.start(job)
