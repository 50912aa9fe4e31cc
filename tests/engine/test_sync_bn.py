"""sync_bn: BatchNorm -> SyncBatchNorm under DDP on CUDA; a clear error where torch cannot (gloo on CPU).

The 2-rank equality test with a BatchNorm model needs CUDA (tests/cuda/test_cuda_paths.py); on CPU the
2-rank gloo test uses a BatchNorm-free model (tests/engine/test_harness_ddp.py, reason in ddp_worker.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness_support import base_overrides, subprocess_env

from unikd.engine import load_config
from unikd.engine.run.distributed import DistInfo, has_batchnorm, sync_batchnorm
from unikd.models import create_model

WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def test_option_defaults_to_off_and_parses():
    assert load_config(None, []).sync_bn is False
    assert load_config(None, ["sync_bn=true"]).sync_bn is True


def test_conversion_replaces_every_batchnorm_and_keeps_the_state_dict():
    model = create_model("resnet8", num_classes=10)
    keys = list(model.state_dict())
    cuda = DistInfo(0, 2, 0, torch.device("cuda", 0))  # conversion itself needs no GPU
    converted = sync_batchnorm(model, cuda)
    kinds = {type(m) for m in converted.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    assert list(converted.state_dict()) == keys  # checkpoints stay interchangeable


def test_single_process_is_untouched_and_cpu_ddp_is_refused():
    model = create_model("resnet8", num_classes=10)
    assert sync_batchnorm(model, DistInfo(0, 1, 0, torch.device("cpu"))) is model
    assert has_batchnorm(model) and not has_batchnorm(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="SyncBatchNorm only runs on CUDA devices"):
        sync_batchnorm(model, DistInfo(0, 2, 0, torch.device("cpu")))


@pytest.mark.slow
def test_two_gloo_ranks_with_sync_bn_fail_at_setup_with_the_reason(npz_data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER,
           *base_overrides(npz_data, tmp_path, model="resnet8", epochs=1, sync_bn="true")]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert "sync_bn=true: torch's SyncBatchNorm only runs on CUDA devices" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "last.pt").exists()
