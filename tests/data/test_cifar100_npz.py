"""CIFAR-100 from a lossless ``.npz``: the shared copy (skipped when absent) and small generated files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from unikd.data import create_dataset

SHARED = Path(
    os.environ.get("UNIKD_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)


def _fake_cifar100(
    path: Path, per_class_train: int = 6, per_class_test: int = 2, compress: bool = True
) -> Path:
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(100, dtype=np.uint8), per_class_train)
    y_test = np.repeat(np.arange(100, dtype=np.uint8), per_class_test)
    arrays = {
        "x_train": rng.integers(0, 256, (len(y_train), 32, 32, 3), dtype=np.uint8),
        "y_train": y_train,
        "x_test": rng.integers(0, 256, (len(y_test), 32, 32, 3), dtype=np.uint8),
        "y_test": y_test,
        "classes": np.array([f"class{i:03d}" for i in range(100)]),
    }
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def test_cifar100_npz_by_file_or_folder(tmp_path: Path) -> None:
    npz = _fake_cifar100(tmp_path / "cifar100.npz")
    raw = np.load(npz)
    by_file = create_dataset("cifar100", root=npz, split="train", cache_dir=tmp_path / "c")
    by_folder = create_dataset("cifar100", root=tmp_path, split="test", cache_dir=tmp_path / "c")
    assert by_file.images.shape == (600, 3, 32, 32) and by_folder.images.shape == (200, 3, 32, 32)
    # HWC -> CHW without touching a pixel; labels and names as stored
    assert torch.equal(by_file.images, torch.from_numpy(raw["x_train"]).permute(0, 3, 1, 2))
    assert by_folder.labels.tolist() == raw["y_test"].astype(int).tolist()
    assert by_file.classes[:2] == ["class000", "class001"]
    # the benchmark's published normalisation, whatever the file
    assert by_file.mean == (0.5071, 0.4867, 0.4408) and by_file.std == (0.2675, 0.2565, 0.2761)
    # the decompressed arrays were cached; a second read gives the same data
    assert list((tmp_path / "c" / "npz").glob("*/x_train.npy"))
    again = create_dataset("cifar100", root=npz, split="train", cache_dir=tmp_path / "c")
    assert torch.equal(again.images, by_file.images)


def test_cifar100_npz_rejects_other_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x_train=np.zeros((10, 28, 28), np.uint8), y_train=np.zeros(10, np.uint8),
             x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match=r"expected \(3, 32, 32\).*data.name=npz"):
        create_dataset("cifar100", root=tmp_path / "x.npz")
    missing = tmp_path / "empty"
    missing.mkdir()
    with pytest.raises(ValueError, match="cifar100.npz"):
        create_dataset("cifar100", root=missing)


def test_split_seed_fixes_validation_but_not_the_training_subset(tmp_path: Path) -> None:
    npz = _fake_cifar100(tmp_path / "cifar100.npz", per_class_train=10, compress=False)
    kw = dict(root=npz, val_split=3, split_seed=7, samples_per_class=4, cache_dir=tmp_path / "c")
    val = [create_dataset("cifar100", split="val", seed=s, **kw) for s in (0, 1)]
    train = [create_dataset("cifar100", split="train", seed=s, **kw) for s in (0, 1)]
    assert torch.equal(val[0].images, val[1].images) and len(val[0]) == 300
    assert not torch.equal(train[0].images, train[1].images) and len(train[0]) == 400

    def rows(ds):
        return {bytes(x.numpy()) for x in ds.images}

    for t, v in zip(train, val):  # no validation image is ever trained on
        assert not rows(t) & rows(v)
    # without split_seed the hold-out follows the run seed, exactly as before split_seed existed
    legacy = create_dataset("cifar100", split="val", seed=7, root=npz, val_split=3, cache_dir=tmp_path / "c")
    assert torch.equal(legacy.images, val[0].images)


@pytest.mark.shared_data
def test_shared_cifar100_npz_counts_and_mean() -> None:
    path = SHARED / "cifar100.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent (set UNIKD_SHARED_DATA to the folder holding cifar100.npz)")
    train = create_dataset("cifar100", root=SHARED, split="train")
    test = create_dataset("cifar100", root=path, split="test")
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [500] * 100
    assert torch.bincount(test.labels).tolist() == [100] * 100
    mean = (train.images.double() / 255.0).mean(dim=(0, 2, 3)).tolist()
    assert mean == pytest.approx([0.5071, 0.4865, 0.4409], abs=6e-5)  # SOURCES.md: 0.50707516 0.48654887 ...
    assert train.classes[:3] == ["apple", "aquarium_fish", "baby"] and len(train.classes) == 100
