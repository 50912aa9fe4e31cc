"""FSDP2 (``fully_shard``) students and teachers: 2 gloo processes on the CPU train exactly as one process.

Each run is 2 SGD steps of 8 sequences with unequal kept-token counts (2 per process x 2 accumulation steps),
compared with one process (8 x 1) in its logged losses, final weights and evaluation loss; the DDP run of the
same launch is held to the same tolerance, so all of them agree with each other. SGD keeps the comparison
sharp (Adam's normalisation magnifies rounding into visible weight differences).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

lm = pytest.importorskip("unikd.lm")
pytest.importorskip("torch.distributed.fsdp")
from unikd.lm.sharding import anchor, check_saving, head_shape, whole  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
WORKER = Path(__file__).resolve().parent / "fsdp_worker.py"


def _launch(out: Path, *runs: str) -> None:
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out), *runs]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _result(folder: Path):
    return json.loads((folder / "losses.json").read_text()), torch.load(folder / "weights.pt")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process runs (fused and unfused), in this process."""
    from fsdp_worker import run

    root = tmp_path_factory.mktemp("one")
    for path in ("fused", "unfused"):
        run(root / path, "none", path)
    run(root / "tied", "none", "fused", tied=True)
    return {name: _result(root / name) for name in ("fused", "unfused", "tied")}


def _assert_same(got, want, what):
    (losses, weights), (ref_losses, ref_weights) = got, want
    assert losses == pytest.approx(ref_losses, rel=1e-5), what
    assert sorted(weights) == sorted(ref_weights), what
    for name in ref_weights:
        torch.testing.assert_close(weights[name], ref_weights[name], rtol=1e-4, atol=1e-6,
                                   msg=f"{what}: {name}")


@pytest.mark.slow
def test_sharded_before_construction_and_unfused_equal_one_process_and_ddp(one_process, tmp_path):
    _launch(tmp_path, "none:fused", "before:fused", "before:unfused", "after:unfused")
    for run in ("none-fused", "before-fused", "before-unfused", "after-unfused"):
        _assert_same(_result(tmp_path / run), one_process[run.split("-")[1]], run)
    moved = _result(tmp_path / "before-fused")[1]["lm_head.weight"]
    assert not torch.allclose(moved, _initial_head(), atol=1e-3)  # the steps really trained


def _initial_head():
    from lm_support import llama

    return llama(seed=2).lm_head.weight.detach()


@pytest.mark.slow
def test_sharded_head_unit_teacher_and_saving_equal_one_process(one_process, tmp_path):
    """Sharded after construction; the head its own unit (its weight a shard when the loss needs it: gathered,
    the gradient reduce-scattered back); the teacher sharded too, and the student saved whole; a head tied to
    the input embedding."""
    _launch(tmp_path, "after:fused", "head:fused", "teacher:fused:save", "before:fused:tied", "refusals:-")
    for run in ("after-fused", "head-fused", "teacher-fused"):
        _assert_same(_result(tmp_path / run), one_process["fused"], run)
    _assert_same(_result(tmp_path / "before-fused-tied"), one_process["tied"], "tied head")
    from transformers import LlamaForCausalLM

    saved = LlamaForCausalLM.from_pretrained(tmp_path / "teacher-fused" / "saved")
    trained = _result(tmp_path / "teacher-fused")[1]
    for name, p in saved.named_parameters():
        torch.testing.assert_close(p.detach(), trained[name], rtol=0, atol=0, msg=name)
    refused = json.loads((tmp_path / "refusals.json").read_text())
    assert "save_only_model=True" in refused["checkpoints"]
    assert "teacher_dtype" in refused["teacher_dtype"] and "sharded" in refused["teacher_dtype"]


def test_anchor_adds_nothing_and_gives_its_output_a_zero_gradient():
    out = torch.tensor([1.0, float("inf"), -2.0], requires_grad=True)
    x = torch.tensor(3.0, requires_grad=True)
    loss = anchor(x * 2, out)
    assert loss.item() == 6.0
    loss.backward()
    assert x.grad.item() == 2.0 and torch.equal(out.grad, torch.zeros(3))
    plain = torch.tensor(1.0)
    assert anchor(plain, None) is plain and anchor(plain, torch.ones(2)) is plain


def test_an_empty_zero3_partition_is_refused_on_the_fused_path_with_the_fix():
    part = torch.empty(0)
    part.ds_shape = torch.Size([96, 16])  # what DeepSpeed ZeRO-3 leaves outside the forward
    assert head_shape(part) == (96, 16)
    with pytest.raises(ValueError, match="fused=False"):
        whole(part, "student")
    dense = torch.ones(3, 2)
    assert whole(dense) is dense and whole(None) is None


@pytest.mark.parametrize(
    ("kw", "ok"),
    [({"save_strategy": "no"}, True), ({"save_strategy": "steps", "save_only_model": True}, True),
     ({"save_strategy": "steps"}, False), ({"save_strategy": "epoch"}, False)],
)
def test_checkpoints_of_a_sharded_student_need_save_only_model(kw, ok, tmp_path):
    from lm_support import args

    a = args(tmp_path, **kw)
    if ok:
        check_saving(a)
    else:
        with pytest.raises(ValueError, match="save_only_model=True"):
            check_saving(a)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
def test_zero3_unfused_equals_one_process_and_fused_is_refused(one_process, tmp_path):
    """DeepSpeed ZeRO-3 through the Trainer's deepspeed argument (gloo on the CPU): the unfused path trains
    as one process does; fused=True is refused at construction, naming fused=False."""
    _launch(tmp_path, "zero3:unfused", "refusals:zero3")
    _assert_same(_result(tmp_path / "zero3-unfused"), one_process["unfused"], "zero3")
    refused = json.loads((tmp_path / "refusals.json").read_text())
    assert "ZeRO-3" in refused["zero3_fused"] and "fused=False" in refused["zero3_fused"]
