"""Fixtures of the engine tests: one thread (the CI machine has 2 shared cores), tiny data, a teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness_support import base_overrides, make_npz


@pytest.fixture(autouse=True)
def _one_thread():
    # Small models on a loaded 2-core machine run ~10x faster single-threaded (no thread contention).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def npz_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_npz(tmp_path_factory.mktemp("data") / "bands.npz")


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory, npz_data: Path) -> Path:
    """A tiny_cnn teacher trained for 3 epochs (session-wide: every distillation test reuses it)."""
    from unikd.engine import load_config, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("teacher")
        train(load_config(None, base_overrides(npz_data, out, epochs=3, **{"sched.milestones": "[2]"})))
    finally:
        torch.set_num_threads(before)
    return out / "best.pt"
