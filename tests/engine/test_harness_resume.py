"""Exact resume: a run killed at a random moment (SIGKILL) or stopped by SIGTERM, then resumed with
``resume=auto``, ends bit-identical to an uninterrupted run (CPU, fp32)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import term_probe
import torch
from harness_support import TRAIN_SNIPPET, base_overrides, run_train, subprocess_env, train_command

from unikd.engine import load_config, train
from unikd.engine.run.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def _overrides(npz: Path, out: Path) -> list[str]:
    # USKD (weak head), EMA, momentum, mixup, a warmup+cosine schedule and mid-epoch checkpoints every 3
    # steps (8 steps per epoch, so most saves land inside epochs): every kind of state must survive the kill.
    return base_overrides(npz, out, method="uskd", epochs=6, ema_decay=0.9, checkpoint_every=3,
                          **{"data.batch_size": 16, "data.mixup_alpha": 0.2, "sched.name": "cosine",
                             "sched.warmup_epochs": 0.5, "optim.nesterov": "true"})


def _run_until(cmd: list[str], out: Path, *, delay: float, sig: int) -> tuple[subprocess.Popen, bool, str]:
    """Start a run, wait until it writes a new last.pt, wait ``delay`` s more, then send ``sig``.

    Returns the process, whether the signal arrived while it was still running, and its stderr.
    """
    last = out / "last.pt"
    old = last.stat().st_ino if last.exists() else None  # atomic replace gives the new file a new inode
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (last.exists() and last.stat().st_ino != old):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"run ended before writing last.pt: {proc.communicate()[1][-2000:]}")
        time.sleep(0.005)
    time.sleep(delay)
    running = proc.poll() is None
    if running:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, running, err


def _reference(npz: Path, out: Path) -> float:
    """The uninterrupted run (in-process, single-threaded like the subprocesses); returns its training
    time after the first checkpoint (the window for a random kill)."""
    t0 = time.perf_counter()
    summary = train(load_config(None, _overrides(npz, out)))
    assert summary["finished"]
    return (time.perf_counter() - t0) * (1 - 3 / 48)


def _assert_identical(a: Path, b: Path, steps: int = 48, keys=("model", "train_model", "objective")) -> None:
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["global_step"] == cb["global_step"] == steps
    for key in keys:
        assert ca[key].keys() == cb[key].keys()
        for name in ca[key]:
            assert torch.equal(ca[key][name], cb[key][name]), f"{key}.{name} differs after resume"
    for pid, state in ca["optimizer"]["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, cb["optimizer"]["state"][pid][name]), f"optimizer {pid}.{name}"
    assert ca["scheduler"] == cb["scheduler"]
    ma = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    drop = ("images_per_s", "epoch_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ma] == \
           [{k: v for k, v in r.items() if k not in drop} for r in mb]
    # metrics.csv is rebuilt from the checkpoint's history too: the same rows as metrics.jsonl, none twice
    for folder, rows in ((a, ma), (b, mb)):
        lines = (folder / "metrics.csv").read_text().splitlines()
        assert lines[0].split(",") == list(rows[0]) and len(lines) == 1 + len(rows)
        assert [int(line.split(",")[0]) for line in lines[1:]] == [r["epoch"] for r in rows]
    assert json.loads((b / "summary.json").read_text())["finished"]


def test_sigterm_then_sigkill_at_a_random_moment_then_resume_is_bit_identical(npz_data, tmp_path):
    window = _reference(npz_data, tmp_path / "ref")
    rng = random.Random()  # a fresh random kill point on every run: the property must hold for all
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        cmd = train_command(_overrides(npz_data, out))
        # 1. SIGTERM right after the first checkpoint: a clean stop that saves last.pt at this step first.
        proc, running, err = _run_until(cmd, out, delay=0.0, sig=signal.SIGTERM)
        assert running, "the run finished before SIGTERM arrived"
        assert proc.returncode != 0 and "saved, continue with resume=auto" in err, err[-3000:]
        assert not json.loads((out / "summary.json").read_text())["finished"]
        stopped = load_checkpoint(out / "last.pt")["global_step"]
        # 2. Resume, and SIGKILL the resumed run at a random moment after its next checkpoint.
        delay = rng.uniform(0, 0.3 * window)
        proc, killed, err = _run_until(cmd + ["resume=auto"], out, delay=delay, sig=signal.SIGKILL)
        killed_at = load_checkpoint(out / "last.pt")["global_step"]
        if killed and killed_at < 48:  # else it was killed after its final checkpoint: try again
            break
    assert killed and proc.returncode == -signal.SIGKILL, f"never killed mid-run (delay {delay:.3f}s)"
    assert stopped < killed_at < 48
    # 3. Resume again, to the end.
    done = run_train(_overrides(npz_data, out) + ["resume=auto"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at step {killed_at}" in done.stdout
    _assert_identical(tmp_path / "ref", out)


def _terms_overrides(npz: Path, out: Path, teacher: Path) -> list[str]:
    # A terms objective whose modules carry state: FitNet's regressor (weights, BN running statistics) and
    # the probe's connector and index-addressed memory bank; 3 epochs of 8 steps, a checkpoint every 3.
    return base_overrides(npz, out, epochs=3, checkpoint_every=3,
                          **{"data.batch_size": 16, "teacher.model": "tiny_cnn",
                             "teacher.checkpoint": str(teacher),
                             "loss.terms": "{kd: {}, fitnet: {weight: 10}, probe: {momentum: 0.5}}"})


def test_killed_terms_run_with_trainable_connectors_resumes_bit_identical(npz_data, teacher_ckpt, tmp_path):
    term_probe.register()
    try:
        ref = train(load_config(None, _terms_overrides(npz_data, tmp_path / "ref", teacher_ckpt)))
        assert ref["finished"]
    finally:
        term_probe.unregister()
    out = tmp_path / "run"
    snippet = "import term_probe; term_probe.register(); " + TRAIN_SNIPPET
    cmd = [sys.executable, "-c", snippet, *_terms_overrides(npz_data, out, teacher_ckpt)]
    proc, killed, err = _run_until(cmd, out, delay=0.0, sig=signal.SIGKILL)
    assert killed and proc.returncode == -signal.SIGKILL, err[-2000:]
    killed_at = load_checkpoint(out / "last.pt")["global_step"]
    assert 0 < killed_at < 24
    done = subprocess.run(cmd + ["resume=auto"], env=subprocess_env(), capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at step {killed_at}" in done.stdout
    _assert_identical(tmp_path / "ref", out, steps=24, keys=("model", "objective"))
    state = load_checkpoint(out / "last.pt")["objective"]
    stateful = {"terms.fitnet.regressor.bn.running_var", "terms.probe.bank", "terms.probe.connector.weight"}
    assert stateful <= set(state)
    assert int(state["terms.probe.seen"].sum()) == 3 * 128
