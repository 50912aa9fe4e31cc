"""DDP: two gloo processes on CPU end where one process with the same global batch ends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness_support import base_overrides, subprocess_env

from unikd.engine.run.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_two_gloo_ranks_match_one_process(npz_data, tmp_path):
    # An objective of two terms: USKD exercises the weak head, whose gradients live outside the DDP wrapper
    # and are averaged by hand (without that averaging the heads differ by ~3e-4 here); tf-KD is a second,
    # logged term. alpha=0 drops USKD's target term, the only part that uses batch statistics (a batch mean
    # of S_t^2, per rank under DDP, like BatchNorm); the remaining terms are per-sample, so 2 ranks x 8 rows
    # must equal 1 process x 16 rows.
    opts = {"model": "test_mlp", "loss.terms": "{uskd: {alpha: 0}, tfkd: {weight: 0.5}}", "epochs": 2,
            "data.batch_size": 16, "data.eval_batch_size": 10, "checkpoint_every": 3}
    _run([sys.executable, WORKER, *base_overrides(npz_data, tmp_path / "one", **opts)])
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                WORKER, *base_overrides(npz_data, tmp_path / "two", **opts)])
    # only rank 0 prints the summary and writes the run folder
    assert sum(line.startswith("{") for line in ddp.stdout.splitlines()) == 1
    assert "16 global = 8 x 2 rank(s)" in ddp.stdout

    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["global_step"] == two["global_step"] == 16
    for key in ("model", "objective"):
        for name, value in one[key].items():
            torch.testing.assert_close(two[key][name], value, rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")
    m1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(m1) == len(m2) == 2
    for r1, r2 in zip(m1, m2):
        # loss terms all-reduced over ranks; val metrics from sharded evaluation all-reduced (odd shard sizes:
        # 32 test images in eval batches of 10 leave a 2-row last batch, 1 row per rank)
        for key in ("train/loss", "train/ce", "train/uskd", "train/tfkd", "val/top1", "val/top5", "val/nll",
                    "val/ece"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-5), key
