"""The vision tests need the real torchvision and timm (CI installs them in a second virtual environment:
torch 2.14.1 + torchvision 0.29.1 + timm); without them every test here is skipped with that reason."""

from __future__ import annotations

import importlib.util

import pytest
import torch

MISSING = [p for p in ("torchvision", "timm") if importlib.util.find_spec(p) is None]
REASON = (
    f"{' and '.join(MISSING)} not installed: these tests run in CI's vision environment "
    "(pip install torch==2.14.1 torchvision==0.29.1 && pip install -e '.[dev,vision]')"
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/vision/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("vision/"):
            item.add_marker(pytest.mark.vision)
            if MISSING:
                item.add_marker(pytest.mark.skip(reason=REASON))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    yield
    torch.set_num_threads(before)
