"""``compile=step``: the forward of every network and the loss terms compiled as one function (its backward
with it), against the eager step of the same run; compiled once after warm-up; the checked first steps of
``checks=auto`` eager.

The compiled tests use a counting ``aot_eager`` backend: dynamo and AOTAutograd trace forward and backward
as inductor would see them, without its C++ code generation (minutes per graph on a small CPU). Inductor
itself runs in the slow test.
"""

from __future__ import annotations

import json

import pytest
import torch
from harness_support import base_overrides
from torch._dynamo.backends.debugging import aot_eager

import unikd.engine.loop.step_mode as step_mode
from unikd.engine import load_config, train
from unikd.engine.loop.setup import build
from unikd.engine.loop.step_mode import CHECKED_STEPS
from unikd.engine.loop.trainer import Trainer
from unikd.engine.run.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
# AOTAutograd decomposes ops (log-softmax, batch norm, ...) into primitives: float32 rounding changes at
# about 1e-7 per op and grows over a few SGD steps; 1e-4 keeps a margin, while a term that is missing or
# computed differently moves the loss by 1e-2 or more.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture
def counted(monkeypatch):
    graphs = {"n": 0}

    def backend(gm, example_inputs):
        graphs["n"] += 1
        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    monkeypatch.setattr(step_mode, "STEP_BACKEND", backend)
    yield graphs
    torch._dynamo.reset()


# uskd: a feature tap and a teacher-free term; dml: online, two networks in one compiled forward
SETUPS = {"uskd": {"method": "uskd"}, "dml": {"method": "dml", "online.peers": "[tiny_cnn]"}}


def _steps(npz, out, n, setup="uskd", **extra):
    """``n`` steps of a run of ``SETUPS[setup]``; returns the trainer and the logged terms of every
    step."""
    cfg = load_config(None, base_overrides(npz, out, **SETUPS[setup], **{"data.batch_size": 16}, **extra))
    c = build(cfg, CPU)
    trainer, values = Trainer(c), []
    per_epoch = len(c.train_loader)
    for step in range(n):
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            c.train_loader.set_epoch(epoch)
            batches = iter(c.train_loader)
        values.append(trainer.step(next(batches), epoch, position, per_epoch)[0])
    return trainer, values


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_compiled_step_matches_eager_and_compiles_once(npz_data, tmp_path, counted, setup):
    _, eager = _steps(npz_data, tmp_path / "e", 10, setup, checks="off")
    counts = []
    original = Trainer.step

    def step(self, *args):
        out = original(self, *args)
        counts.append(counted["n"])
        return out

    Trainer.step = step
    try:
        _, compiled = _steps(npz_data, tmp_path / "c", 10, setup, checks="off", compile="step")
    finally:
        Trainer.step = original
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=RTOL, atol=ATOL)
    assert counts[0] >= 1  # compiled from the first step (checks off)
    # the epoch progress turns symbolic at its second value (one recompilation), then nothing compiles:
    # not at the next steps, nor in the next epoch (8 steps per epoch here)
    assert counts[2:] == [counts[1]] * 8, counts


def test_compiled_weights_follow_the_eager_ones(npz_data, tmp_path, counted):
    e, _ = _steps(npz_data, tmp_path / "e", 4, checks="off")
    c, _ = _steps(npz_data, tmp_path / "c", 4, checks="off", compile="step")
    for (name, pe), pc in zip(e.c.model.state_dict().items(), c.c.model.state_dict().values()):
        torch.testing.assert_close(pc, pe, rtol=RTOL, atol=ATOL, msg=name)


def test_checked_steps_run_eagerly(npz_data, tmp_path, counted):
    cfg = load_config(None, base_overrides(npz_data, tmp_path, method="uskd", compile="step"))
    c = build(cfg, CPU)
    trainer = Trainer(c)
    c.train_loader.set_epoch(0)
    batches = iter(c.train_loader)
    trainer.mode.steps = CHECKED_STEPS - 1  # the last checked step: eager
    trainer.step(next(batches), 0, 0, len(c.train_loader))
    assert counted["n"] == 0
    trainer.step(next(batches), 0, 1, len(c.train_loader))  # the first unchecked one: compiled
    assert counted["n"] >= 1
    assert c.ddp_model is c.model  # compile=step leaves the model itself uncompiled


@pytest.mark.slow
def test_inductor_run_matches_eager(npz_data, tmp_path):
    torch._dynamo.reset()
    common = dict(method="uskd", epochs=1, checks="off")
    train(load_config(None, base_overrides(npz_data, tmp_path / "e", **common)))
    train(load_config(None, base_overrides(npz_data, tmp_path / "c", compile="step", **common)))
    torch._dynamo.reset()
    eager, compiled = (json.loads((tmp_path / d / "metrics.jsonl").read_text()) for d in ("e", "c"))
    for key in ("train/loss", "train/ce", "train/uskd", "val/top1"):
        assert compiled[key] == pytest.approx(eager[key], rel=RTOL, abs=ATOL), key
