"""DDP with online training: two gloo ranks end where one process with the same global batch ends, for the
student and its peer (weights, loss terms, validation metrics), with gradient diagnostics switched on."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from harness_support import base_overrides
from test_harness_ddp import WORKER, _run

from unikd.engine.run.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_two_gloo_ranks_match_one_process_online(npz_data, tmp_path):
    # BatchNorm-free networks (test_mlp): per-sample terms, so 2 ranks x 8 rows equal 1 process x 16 rows.
    opts = {"model": "test_mlp", "method": "dml", "online.peers": "[test_mlp]", "epochs": 2,
            "data.batch_size": 16, "data.eval_batch_size": 10, "checkpoint_every": 3, "diagnostics.every": 2}
    _run([sys.executable, WORKER, *base_overrides(npz_data, tmp_path / "one", **opts)])
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                WORKER, *base_overrides(npz_data, tmp_path / "two", **opts)])
    assert "16 global = 8 x 2 rank(s)" in ddp.stdout
    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["global_step"] == two["global_step"] == 16
    pairs = [(one["model"], two["model"])]
    pairs += [(a["model"], b["model"]) for a, b in zip(one["online"]["peers"], two["online"]["peers"])]
    for a, b in pairs:
        for name, value in a.items():
            torch.testing.assert_close(b[name], value, rtol=1e-4, atol=1e-5, msg=name)
    m1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    for r1, r2 in zip(m1, m2):
        for key in ("train/loss", "train/dml", "train/peer1/loss", "train/peer1/dml", "train/peer1/top1",
                    "val/top1", "val/peer1/top1", "val/peer1/nll", "val/peer1/ece"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-5), key
        # diagnostics: each rank's local-batch measurement, averaged over ranks (not the 1-process value)
        for key in ("train/ce/grad_logits", "train/dml/grad_layer", "train/dml/cos_layer"):
            assert math.isfinite(r2[key])
