"""Exact resume of online training: a run of two networks (BD-KD, EMA, mixup, warm-up + cosine, mid-epoch
checkpoints, gradient diagnostics) killed with SIGKILL at a random moment and resumed with ``resume=auto``
ends bit-identical to an uninterrupted run: both networks' weights, EMAs, optimisers, schedules and term
state, and every line of metrics.jsonl (the peers' and the diagnostics' values included)."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest
import torch
from harness_support import base_overrides, subprocess_env, train_command
from test_harness_resume import _assert_identical, _run_until

from unikd.engine import load_config, train
from unikd.engine.run.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
STEPS = 32  # 4 epochs x 8 steps


def _overrides(npz, out):
    return base_overrides(npz, out, method="bdkd", epochs=4, ema_decay=0.9, checkpoint_every=3,
                          **{"online.peers": "[tiny_cnn]", "diagnostics.every": 2, "data.batch_size": 16,
                             "data.mixup_alpha": 0.2, "sched.name": "cosine", "sched.warmup_epochs": 0.5,
                             "optim.nesterov": "true", "loss.gap_scale": 2.0})


def _assert_peers_identical(a, b):
    pa = load_checkpoint(a / "last.pt")["online"]["peers"]
    pb = load_checkpoint(b / "last.pt")["online"]["peers"]
    assert len(pa) == len(pb) == 1
    for x, y in zip(pa, pb):
        for key in ("model", "train_model", "objective"):
            assert x[key].keys() == y[key].keys()
            for name in x[key]:
                assert torch.equal(x[key][name], y[key][name]), f"peer {key}.{name} differs after resume"
        for name in x["ema"]["module"]:
            assert torch.equal(x["ema"]["module"][name], y["ema"]["module"][name])
        for pid, state in x["optimizer"]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, y["optimizer"]["state"][pid][name]), f"peer optimizer {pid}.{name}"
        assert x["scheduler"] == y["scheduler"] and x["progress"] == y["progress"]


def test_killed_online_run_resumes_bit_identical(npz_data, tmp_path):
    t0 = time.perf_counter()
    ref = train(load_config(None, _overrides(npz_data, tmp_path / "ref")))
    window = (time.perf_counter() - t0) * (1 - 3 / STEPS)  # the run's time after its first checkpoint
    assert ref["finished"] and ref["online"]["networks"][1]["name"] == "peer1"
    rng = random.Random()  # a fresh kill point on every run
    for attempt in range(3):
        # a fresh folder per attempt: one that finished before the kill holds a complete run
        out = tmp_path / f"run{attempt}"
        cmd = train_command(_overrides(npz_data, out))
        proc, killed, err = _run_until(cmd, out, delay=rng.uniform(0.0, 0.3 * window), sig=signal.SIGKILL)
        killed_at = load_checkpoint(out / "last.pt")["global_step"]
        if killed and killed_at < STEPS:
            break
    assert killed and proc.returncode == -signal.SIGKILL, err[-2000:]
    assert 0 < killed_at < STEPS
    done = subprocess.run(cmd + ["resume=auto"], env=subprocess_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at step {killed_at}" in done.stdout
    _assert_identical(tmp_path / "ref", out, steps=STEPS)
    _assert_peers_identical(tmp_path / "ref", out)
    diag = load_checkpoint(out / "last.pt")["diagnostics"]
    assert diag["layer"] == "fc" and diag["counts"].sum() > 0
