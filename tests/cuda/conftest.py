"""Fixtures of the CUDA tests: the tiny npz data and the helpers of the engine and loss tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))

from harness_support import make_npz  # noqa: E402


@pytest.fixture(scope="session")
def npz_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_npz(tmp_path_factory.mktemp("cuda-data") / "bands.npz")
