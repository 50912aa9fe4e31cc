"""The engine's own training step (``unikd.engine.loop.step.train_step`` through ``Trainer.step``) in the
timing loop of benchmarks/gpu_step.py: modes ``engine`` (eager, checks off) and ``engine+compile``
(``compile=step``). Components are built by the engine from a tiny random ``npz`` in a temporary folder
(only to give ``build`` its data and run folder); the timed steps run on the benchmark's own batches.

Teacher-free methods only (``ce``, ``uskd``): the engine distils from a trained teacher checkpoint, which a
random-weights benchmark does not have; the KD and NKD steps are timed by the self-contained modes.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

ENGINE_MODES = ("engine", "engine+compile")
ENGINE_METHODS = ("ce", "uskd")


def make_engine_step(mode: str, pair: str, method: str, args: argparse.Namespace):
    """A callable ``(x, y)`` running one engine step (``None`` for a method the engine mode lacks)."""
    if method not in ENGINE_METHODS:
        return None
    import unikd.engine.loop.step_mode as step_mode
    from unikd.data.loader import Batch
    from unikd.engine import load_config
    from unikd.engine.loop.setup import build
    from unikd.engine.loop.trainer import Trainer
    from unikd.engine.run.distributed import DistInfo

    logging.getLogger("unikd").setLevel(logging.WARNING)  # no preflight table per configuration
    step_mode.STEP_BACKEND = args.backend
    folder = Path(tempfile.mkdtemp(prefix="gpu_step_"))
    rng = np.random.default_rng(0)
    n, size = 2 * args.classes, args.image_size
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = np.arange(n) % args.classes
    np.savez(folder / "data.npz", x_train=x, y_train=y, x_test=x[: args.classes], y_test=y[: args.classes])
    overrides = {
        "model": pair.split(":")[1], "method": method, "data.name": "npz", "data.root": folder / "data.npz",
        "data.batch_size": args.batch, "epochs": args.epochs, "out_dir": folder / "run",
        "tensorboard": "false",
        "device": args.device, "checks": "off", "compile": "step" if mode == "engine+compile" else "false",
        "optim.lr": 0.05, "optim.weight_decay": 5e-4,
    }
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    dev = torch.device(args.device)
    trainer = Trainer(build(cfg, DistInfo(0, 1, 0, dev)))
    index = torch.arange(args.batch, device=dev) % n
    steps = args.train_size // args.batch
    count = {"i": 0}

    def step(xb, yb):
        i = count["i"] = (count["i"] + 1) % steps
        return trainer.step(Batch(xb, yb, index), 0, i, steps)[0]

    return step


__all__ = ["ENGINE_METHODS", "ENGINE_MODES", "make_engine_step"]
