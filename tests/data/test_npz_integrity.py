"""npz files: integer labels only, and the decompressed-member cache is checked against the zip's CRC-32."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from unikd.data import create_dataset


def _write(path, y_train, compressed=False):
    x = np.random.default_rng(0).integers(0, 255, (32, 8, 8, 3), dtype=np.uint8)
    save = np.savez_compressed if compressed else np.savez
    save(path, x_train=x, y_train=y_train, x_test=x[:4], y_test=np.arange(4))
    return x


@pytest.mark.parametrize("labels, match", [
    (np.array([0.0, 1.0, 2.5, 3.0] * 8), "labels must be integer class indices, got dtype float64;"),
    (np.array([0.0, 1.0, 2.0, 3.0] * 8, dtype=np.float32), r"whole numbers: store them with y.astype"),
    (np.array([0, 1, -1, 3] * 8), "class indices must be >= 0"),
])
def test_npz_labels_must_be_integers(tmp_path, cache_dir, labels, match):
    _write(tmp_path / "d.npz", labels)  # float labels used to be truncated silently
    with pytest.raises(ValueError, match=match):
        create_dataset("npz", root=tmp_path / "d.npz", cache_dir=cache_dir)


def test_damaged_decompressed_member_is_inflated_again(tmp_path, cache_dir, caplog):
    x = _write(tmp_path / "c.npz", np.arange(32) % 4, compressed=True)
    first = create_dataset("npz", root=tmp_path / "c.npz", cache_dir=cache_dir)
    cached = sorted(cache_dir.rglob("x_train.npy"))
    assert len(cached) == 1
    raw = bytearray(cached[0].read_bytes())
    raw[-10] ^= 0xFF  # one pixel of the last image
    cached[0].write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="unikd"):
        again = create_dataset("npz", root=tmp_path / "c.npz", cache_dir=cache_dir)
    assert "is damaged (CRC mismatch)" in caplog.text
    assert np.array_equal(again.images.numpy(), first.images.numpy())
    assert np.array_equal(np.moveaxis(again.images.numpy(), 1, -1), x)
