"""The bench's job pool and scheduler: N runs at a time, dependencies on the teacher, failures, threads.

The training command is replaced by a small script that logs its start and end, so these tests check the
scheduling, not the training (``test_bench_grid.py`` runs real trainings one at a time).
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import pytest

from unikd.bench.pool import Job, JobPool
from unikd.bench.runner import run_grid
from unikd.bench.spec import RunPlan, parse_spec

FAKE_TRAIN = r"""
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
out = args["out_dir"]
os.makedirs(out, exist_ok=True)
with open(os.environ["EVENTS"], "a") as f:
    f.write(json.dumps({"run": out, "event": "start", "t": time.time(),
                        "threads": os.environ.get("OMP_NUM_THREADS")}) + "\n")
time.sleep(float(os.environ.get("RUN_SECONDS", "0.6")))
if "/fail/" in out:
    with open(os.environ["EVENTS"], "a") as f:
        f.write(json.dumps({"run": out, "event": "end", "t": time.time()}) + "\n")
    sys.exit(3)
summary = {"finished": True, "best_top1": 50.0, "last_top1": 50.0, "epochs": 1, "method": args.get("method"),
           "model": args.get("model"), "seed": int(args.get("seed", 0)), "wall_seconds": 1.0,
           "seconds_per_epoch": 1.0}
open(os.path.join(out, "summary.json"), "w").write(json.dumps(summary))
with open(os.environ["EVENTS"], "a") as f:
    f.write(json.dumps({"run": out, "event": "end", "t": time.time()}) + "\n")
"""


def test_pool_runs_jobs_concurrently_and_reports_exit_codes(tmp_path):
    pool = JobPool(2, threads=1)
    ended: list[tuple[str, int]] = []
    for key, code in (("a", 0), ("b", 4)):
        code_text = (
            f"import os, sys, time; time.sleep(0.5); print(os.environ['OMP_NUM_THREADS']); sys.exit({code})"
        )
        cmd = [sys.executable, "-c", code_text]
        pool.start(Job(key, cmd, tmp_path / f"{key}.log", lambda rc, k=key: ended.append((k, rc))))
    assert pool.free() == 0
    t0 = time.monotonic()
    while pool.running:
        pool.wait_any(poll=0.05)
    assert time.monotonic() - t0 < 1.5  # both slept 0.5 s at the same time
    assert sorted(ended) == [("a", 0), ("b", 4)]
    assert (tmp_path / "a.log").read_text().strip().endswith("1")  # OMP_NUM_THREADS=1 in the job


def test_pool_stop_all_terminates_running_jobs(tmp_path):
    pool = JobPool(1)
    pool.start(Job("slow", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log",
                   lambda rc: None))
    t0 = time.monotonic()
    pool.stop_all(timeout=10)
    assert time.monotonic() - t0 < 10 and not pool.running
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        JobPool(0)


def _spec(tmp_path: Path, jobs: int, methods: dict) -> object:
    return parse_spec({
        "out_dir": str(tmp_path / "bench"),
        "seeds": [0, 1],
        "jobs": jobs,
        "threads": 1,
        "overrides": {"epochs": 1, "device": "cpu", "data.name": "digits"},
        "tracks": [
            {"name": "t", "student": "tiny_cnn", "teacher": {"model": "tiny_cnn"}, "methods": methods}
        ],
    })


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grid_with_two_jobs_overlaps_runs_and_waits_for_the_teacher(tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("EVENTS", str(events))
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(
        RunPlan, "command", lambda self, cfg: [sys.executable, str(script), *self.override_args()]
    )
    spec = _spec(tmp_path, 2, {"ce": {}, "kd": {}, "fail": {"method": "ce", "loss.ce_weight": 0.5}})
    # "fail" is a ce variant whose fake run exits with code 3
    out = io.StringIO()
    rc = run_grid(spec, plots=False, stream=out)
    log = out.getvalue()
    assert rc == 1 and "FAILED t/fail/seed0" in log and "FAILED t/fail/seed1" in log
    ev = _events(events)
    starts = {e["run"]: e["t"] for e in ev if e["event"] == "start"}
    ends = {e["run"]: e["t"] for e in ev if e["event"] == "end"}
    assert {e["threads"] for e in ev if e["event"] == "start"} == {"1"}
    teacher = next(r for r in starts if "/teachers/" in r)
    kd_runs = [r for r in starts if "/kd/" in r]
    ce_runs = [r for r in starts if r.endswith(("ce/seed0", "ce/seed1"))]
    assert len(kd_runs) == 2 and len(ce_runs) == 2
    assert all(starts[r] >= ends[teacher] for r in kd_runs)  # students of a teacher wait for it
    assert any(starts[r] < ends[teacher] for r in ce_runs)  # a teacher-free run used the free slot
    # never more than two at once
    timeline = sorted([(t, 1) for t in starts.values()] + [(t, -1) for t in ends.values()])
    running, peak = 0, 0
    for _, step in timeline:
        running += step
        peak = max(peak, running)
    assert peak == 2
    # a second invocation resumes: the failed runs are retried, the finished ones skipped
    out2 = io.StringIO()
    run_grid(spec, plots=False, stream=out2)
    assert "5/7 runs already finished" in out2.getvalue()
