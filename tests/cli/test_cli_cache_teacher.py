"""``unikd cache-teacher``: '-' takes the built-in defaults as in ``unikd train -``, and every error (a held
lock included) goes to stderr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unikd._lock import FolderLock
from unikd.cli import main
from unikd.models import create_model


@pytest.fixture
def overrides(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 8)
    x = rng.integers(0, 255, size=(len(y), 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[::4], y_test=y[::4])
    torch.manual_seed(0)
    torch.save(create_model("tiny_cnn", num_classes=4).state_dict(), tmp_path / "t.pt")
    return ["method=kd", "model=tiny_cnn", "teacher.model=tiny_cnn", f"teacher.checkpoint={tmp_path}/t.pt",
            "data.name=npz", f"data.root={tmp_path}/d.npz", "data.batch_size=16", "device=cpu"]


def test_dash_means_the_built_in_defaults(tmp_path, overrides, capsys):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["cache-teacher", "-", *overrides, "--out", str(tmp_path / "c"), "--epochs", "1",
                   "--no-progress"])
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    assert (tmp_path / "c" / "manifest.json").is_file() and "use it with: unikd train -" in out.out


def test_errors_go_to_stderr(tmp_path, overrides, capsys):
    assert main(["cache-teacher", "-", "--no-progress"]) == 2  # the defaults have no teacher
    out = capsys.readouterr()
    assert "needs teacher.model and teacher.checkpoint" in out.err and "error" not in out.out
    with FolderLock(tmp_path / "c", ".lock", "another build"):
        assert main(["cache-teacher", "-", *overrides, "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    out = capsys.readouterr()
    assert "already writing into" in out.err and out.out == "", out


def test_a_full_disk_is_one_error_line_naming_the_file(tmp_path, overrides, capsys, monkeypatch):
    import errno
    import os

    def no_space(fd, offset, length):  # what a full filesystem answers when the shard's blocks are reserved
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    rc = main(["cache-teacher", "-", *overrides, "--out", str(tmp_path / "c"), "--epochs", "1",
               "--no-progress"])
    out = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out.err, out.err[-2000:]
    lines = [line for line in out.err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "No space left on device" in lines[0] and ".npy" in lines[0]
    assert "run the same command again" in lines[0]
    assert not list((tmp_path / "c").glob("*.npy"))  # no shard under a final name
