"""The engine's step on CUDA: with checks off, the forward of the networks and the loss terms with their
backward issue no host sync (``torch.cuda.set_sync_debug_mode("error")``; the step's one host copy, for the
finiteness check, comes after it), and ``compile=step`` (inductor) follows the eager step."""

from __future__ import annotations

import pytest
import torch
from harness_support import base_overrides

from unikd.engine import load_config
from unikd.engine.loop.setup import build
from unikd.engine.loop.step import forward_terms
from unikd.engine.loop.trainer import Trainer
from unikd.engine.run.distributed import DistInfo
from unikd.losses.checks import checks

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GPU = DistInfo(0, 1, 0, torch.device("cuda"))


def _components(npz, out, **extra):
    opts = {"method": "uskd", "device": "cuda", "data.batch_size": 16, **extra}
    return build(load_config(None, base_overrides(npz, out, **opts)), GPU)


def test_unchecked_forward_and_backward_have_no_host_sync(npz_data, tmp_path):
    c = _components(npz_data, tmp_path, checks="off")
    c.train_loader.set_epoch(0)
    batch = next(iter(c.train_loader))
    Trainer(c).step(batch, 0, 0, len(c.train_loader))  # a first step: state read once, buffers made
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with checks("off"):
            _, outs = forward_terms(c, batch.images, batch.target, None, batch.index, 0.5)
            outs[0]["loss"].backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_compiled_step_follows_eager(npz_data, tmp_path):
    torch._dynamo.reset()
    runs = []
    for name, extra in (("e", {}), ("c", {"compile": "step"})):
        c = _components(npz_data, tmp_path / name, checks="off", **extra)
        trainer, steps = Trainer(c), len(c.train_loader)
        c.train_loader.set_epoch(0)
        runs.append([trainer.step(b, 0, i, steps)[0] for i, b in zip(range(4), c.train_loader)])
    for e, comp in zip(*runs):  # inductor fuses and reorders float32 reductions: a looser tolerance
        torch.testing.assert_close(comp, e, rtol=1e-3, atol=1e-4)
    torch._dynamo.reset()
