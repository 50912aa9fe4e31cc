"""On-policy and sequence-level batches under DDP: 2 gloo processes equal one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
SRC = Path(__file__).resolve().parents[2] / "src"
WORKER = Path(__file__).resolve().parent / "ddp_generation_worker.py"


def _worker(out, batch, accumulation, processes=1):
    launch = (
        [sys.executable]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
        ]
    )
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    done = subprocess.run(
        [*launch, str(WORKER), str(out), str(batch), str(accumulation)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / "result.json").read_text()), torch.load(out / "weights.pt")


@pytest.mark.slow
def test_ddp_with_generation_equals_one_process(tmp_path):
    """1 process x 4 sequences x 2 accumulation steps against 2 processes x 2 x 2, over 3 optimizer steps
    with student-sampled, teacher-sampled and dataset micro-batches: every process's i-th micro-batch of a
    step takes the same role, each row samples with its own seed (its place in the global batch), and the
    step's token count spans the generated tokens of both processes, so the runs agree."""
    one, w_one = _worker(tmp_path / "one", 4, 2)
    two, w_two = _worker(tmp_path / "two", 2, 2, processes=2)
    student, teacher, data, tokens = one["counts"]
    assert student > 0 and teacher > 0 and data > 0  # all three roles happened
    # one process has 6 micro-batches, two have 6 each (each half as wide); the same sampled tokens
    assert two["counts"] == [2 * student, 2 * teacher, 2 * data, tokens]
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    for name in w_one:
        torch.testing.assert_close(w_two[name], w_one[name], rtol=1e-4, atol=1e-6, msg=name)
