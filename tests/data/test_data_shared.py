"""Optional checks on the real CIFAR-10 JPEG archive in ../shared/data (UNIKD_SHARED_DATA)."""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from unikd.data import create_dataset
from unikd.data.imagefolder import index_layout

pytestmark = pytest.mark.shared_data

SHARED = Path(
    os.environ.get("UNIKD_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)
ARCHIVE = SHARED / "cifar10-jpg.tar.gz"


def _archive() -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} is absent (set UNIKD_SHARED_DATA to the folder holding cifar10-jpg.tar.gz)")
    return ARCHIVE


def test_cifar10_jpg_layout_counts() -> None:
    with tarfile.open(_archive(), "r|gz") as tf:
        names = [m.name for m in tf if m.isfile()]
    classes, layout = index_layout(names, str(ARCHIVE))
    assert classes[:3] == ["airplane", "automobile", "bird"] and len(classes) == 10
    assert {s: len(v) for s, v in layout.items()} == {"train": 50_000, "test": 10_000}
    assert set(Counter(lab for _, lab in layout["train"]).values()) == {5000}


@pytest.mark.slow
def test_cifar10_jpg_decodes(tmp_path: Path) -> None:
    test = create_dataset("imagefolder", root=_archive(), split="test", cache_dir=tmp_path)
    assert test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # The SOURCES.md check: the train mean is close to the official 0.4914 / 0.4822 / 0.4465.
    assert all(abs(a - b) < 2e-3 for a, b in zip(test.mean, (0.4914, 0.4822, 0.4465)))
