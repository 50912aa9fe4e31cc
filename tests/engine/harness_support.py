"""Shared helpers of the harness tests: a tiny learnable npz dataset and config overrides for fast runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def make_npz(path: Path, *, classes: int = 4, per_class: int = 32, test_per_class: int = 8, size: int = 8,
             channels: int = 3, seed: int = 0) -> Path:
    """Class c lights up the c-th horizontal band of the image (plus noise): learnable in a few steps."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(classes), n)
        x = rng.integers(0, 80, size=(len(y), size, size, channels))
        band = size // classes
        for i, c in enumerate(y):
            x[i, c * band:(c + 1) * band] += 150
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(per_class)
    x_test, y_test = split(test_per_class)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def base_overrides(npz: Path, out_dir: Path, **extra: object) -> list[str]:
    """A tiny, fast run: tiny_cnn on the npz data, 2 epochs of 4 steps."""
    opts: dict[str, object] = {
        "model": "tiny_cnn",
        "data.name": "npz",
        "data.root": str(npz),
        "data.batch_size": 32,
        "data.eval_batch_size": 64,
        "epochs": 2,
        "optim.lr": 0.05,
        "sched.milestones": "[1]",
        "out_dir": str(out_dir),
        "tensorboard": "false",
        "device": "cpu",
    }
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def subprocess_env() -> dict[str, str]:
    """One thread per process: faster and deterministic on the loaded 2-core CI machine."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(Path(__file__).parent),
                                         env.get("PYTHONPATH", "")])
    return env


# Runs unikd.engine.train on the config given as key=value arguments (the CLI without the dispatcher).
TRAIN_SNIPPET = ("import sys; from unikd.engine import load_config, train; "
                 "train(load_config(None, sys.argv[1:]))")


def train_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-c", TRAIN_SNIPPET, *overrides]


def run_train(overrides: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(train_command(overrides), env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
