"""``unikd bench`` end to end on a tiny grid: teacher + 2 methods x 2 seeds, a kill mid-way, a resume,
and ``unikd report`` regeneration. Each run is a real ``python -m unikd train`` subprocess (a few steps)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from bench_fake_runs import run_cli

from unikd.bench.results import is_finished

pytestmark = pytest.mark.slow


def _harness_ready() -> str | None:
    try:
        import unikd.cli.train  # noqa: F401
        import unikd.engine.loop.trainer  # noqa: F401
        from unikd.cli import build_parser

        build_parser()
    except ImportError as e:  # the harness lands separately from the bench
        return f"training harness not importable yet: {e}"
    return None


def _make_npz(path: Path) -> None:
    """3 classes of 8x8 RGB images: a bright 3x3 patch at a class-specific place, plus noise."""
    rng = np.random.default_rng(0)

    def split(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for c in range(3):
            x = rng.integers(0, 80, size=(n_per_class, 8, 8, 3), dtype=np.uint8)
            x[:, 2 * c : 2 * c + 3, 2 * c : 2 * c + 3, :] += 60  # faint, so accuracy is not always 100%
            xs.append(x)
            ys.append(np.full(n_per_class, c, dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = split(200)  # enough steps per epoch for the test to catch a run part-way
    x_test, y_test = split(8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _write_spec(tmp_path: Path) -> Path:
    _make_npz(tmp_path / "toy.npz")
    spec = {
        "name": "toy",
        "out_dir": str(tmp_path / "bench"),
        "seeds": [0, 1],
        "teacher_cache": True,  # kd reads teacher outputs from one cache per seed (built by the bench)
        "overrides": {
            "epochs": 4,
            "device": "cpu",
            "tensorboard": False,
            "data": {"name": "npz", "root": str(tmp_path / "toy.npz"), "batch_size": 16, "crop_padding": 1},
            "optim.lr": 0.05,
            "sched.name": "cosine",
        },
        "tracks": [
            {
                "name": "toy",
                "student": "tiny_cnn",
                "teacher": {"model": "tiny_cnn", "overrides": {"epochs": 3}},
                "methods": {"ce": {}, "kd": {"loss.temperature": 2.0}},
            },
            {"name": "self", "student": "tiny_cnn", "methods": ["ce"]},  # same CE settings: copied
        ],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _bench_cmd(spec: Path) -> list[str]:
    return [sys.executable, "-m", "unikd", "bench", str(spec), "--no-plots"]


def _env(tmp_path: Path) -> dict[str, str]:
    # UNIKD_CACHE: the teacher-output caches go there, not into the user's ~/.cache
    return {**os.environ, "OMP_NUM_THREADS": "1", "UNIKD_CACHE": str(tmp_path / "cache")}


def _starts(run: Path) -> int:
    log = run / "train.log"
    return log.read_text().count("unikd bench:") if log.is_file() else 0


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


@pytest.mark.timeout(2400)  # minutes of subprocess training when the machine is shared
def test_grid_kill_resume_and_report(tmp_path):
    reason = _harness_ready()
    if reason:
        pytest.skip(reason)
    spec = _write_spec(tmp_path)
    bench = tmp_path / "bench"
    runs = [bench / "runs" / "toy" / m / f"seed{s}" for s in (0, 1) for m in ("ce", "kd")]

    # 1) start the grid and kill it while a student run is part-way (>= 1 epoch written, not finished)
    proc = subprocess.Popen(
        _bench_cmd(spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path)
    )
    victim, first_epoch = None, None
    deadline = time.monotonic() + 600  # teacher + first run + cache first: minutes on a loaded machine
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        for run in runs[1:]:  # not the first run, so at least one student run is already finished
            lines = _lines(run / "metrics.jsonl")
            if lines and not is_finished(run):
                victim, first_epoch = run, lines[0]
                break
        time.sleep(0.005)
    if victim is not None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert victim is not None, f"never caught a run mid-way; bench output:\n{out}"
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert not (bench / ".bench.lock").exists()
    finished_before = {r: (r / "summary.json").read_text() for r in runs if is_finished(r)}
    assert runs[0] in finished_before and victim not in finished_before

    # 2) resume: finished runs are skipped (not started again), the killed run continues from last.pt
    res = subprocess.run(_bench_cmd(spec), capture_output=True, text=True, env=_env(tmp_path), timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(finished_before) + 1}/7 runs already finished" in res.stdout  # + teacher
    assert "left ~" in res.stdout
    for run, summary in finished_before.items():
        assert _starts(run) == 1 and (run / "summary.json").read_text() == summary
    assert _starts(victim) == 2
    assert _lines(victim / "metrics.jsonl")[0] == first_epoch  # epoch 1 was not trained again
    for run in runs:
        s = json.loads((run / "summary.json").read_text())
        assert s["finished"] is True and s["epochs"] == 4
    teachers = list((bench / "teachers").iterdir())
    assert len(teachers) == 1 and _starts(teachers[0]) == 1
    kd_cfg = yaml.safe_load((runs[1] / "config.yaml").read_text())
    assert kd_cfg["teacher"]["checkpoint"] == str(teachers[0] / "last.pt")
    caches = sorted((tmp_path / "cache" / "teacher-cache").iterdir())
    assert len(caches) == 2  # one per seed, shared by the teacher methods of that seed
    assert kd_cfg["teacher"]["cache"] == str(caches[0])
    assert yaml.safe_load((runs[0] / "config.yaml").read_text())["teacher"]["cache"] is None  # ce: no teacher

    # 3) a third invocation has nothing to do
    res = subprocess.run(_bench_cmd(spec), capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert res.returncode == 0 and "7/7 runs already finished" in res.stdout
    assert all(_starts(r) == (2 if r == victim else 1) for r in runs)

    copied = bench / "runs" / "self" / "ce" / "seed1"
    assert (copied / "summary.json").read_text() == (runs[2] / "summary.json").read_text()
    assert not (copied / "last.pt").exists() and _starts(copied) == 0

    rows = [r for r in csv.DictReader((bench / "results.csv").open()) if r["track"] == "toy"]
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("ce", "0"),
        ("ce", "1"),
        ("kd", "0"),
        ("kd", "1"),
    ]
    assert all(r["finished"] == "True" and float(r["seconds_per_epoch"]) > 0 for r in rows)
    md = (bench / "report.md").read_text()
    assert "## Track `toy`" in md and "| `kd` | kd | 0,1 |" in md
    assert "## Track `self`" in md and "the same runs as `toy/ce`" in md

    # 4) report regeneration from the run folders, into another folder
    (bench / "report.md").unlink()
    assert run_cli("report", [str(bench), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    md2 = (tmp_path / "rep" / "report.md").read_text()

    def tables(text: str) -> str:  # the per-track tables (title, date and relative folders differ)
        return text[text.index("## Track") : text.index("## Teachers")]

    assert tables(md2) == tables(md)


def test_spec_error_reported_before_any_run(tmp_path, capsys):
    reason = _harness_ready()
    if reason:
        pytest.skip(reason)
    spec = _write_spec(tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["tracks"][0]["methods"]["kd"] = {"loss.temprature": 2.0}
    spec.write_text(yaml.safe_dump(data))
    assert run_cli("bench", [str(spec)]) == 2
    err = capsys.readouterr().err
    assert "toy/kd/seed0" in err and "temperature" in err
    assert not (tmp_path / "bench" / "runs").exists()
