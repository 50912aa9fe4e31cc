"""Disk full, permission denied and read-only folders end ``unikd train`` with one ``unikd train: error:``
line naming the file and the intact checkpoints (no traceback); run files respect the umask."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from harness_support import base_overrides

import unikd._atomic
from unikd.cli import main
from unikd.engine.run.checkpoint import load_checkpoint

_real_fdopen = os.fdopen


class _FailingFile:
    """A file object whose writes fail with ``code`` (what a full or read-only disk does)."""

    def __init__(self, f, code: int) -> None:
        self._f, self._code = f, code

    def write(self, data):
        raise OSError(self._code, os.strerror(self._code))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _fail_nth_write_of(name: str, n: int, code: int, monkeypatch) -> None:
    """Make the ``n``-th atomic write of ``name`` (1-based) fail with ``code``."""
    seen = {"n": 0}

    def fdopen(fd, *args, **kwargs):
        f = _real_fdopen(fd, *args, **kwargs)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f
        if Path(target).name.startswith(f".{name}."):
            seen["n"] += 1
            if seen["n"] == n:
                return _FailingFile(f, code)
        return f

    monkeypatch.setattr(unikd._atomic.os, "fdopen", fdopen)


def _cli(npz: Path, out: Path, capsys, **opts: object) -> tuple[int, str]:
    rc = main(["train", "-", *base_overrides(npz, out, **opts)])
    return rc, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("unikd train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to find the file")
@pytest.mark.parametrize("code, reason, hint", [
    (errno.ENOSPC, "No space left on device", "Free some disk space"),
    (errno.EACCES, "Permission denied", "Make the folder writable"),
])
def test_write_error_is_one_line_naming_the_file_and_the_intact_checkpoint(npz_data, tmp_path, capsys,
                                                                           monkeypatch, code, reason, hint):
    _fail_nth_write_of("last.pt", 2, code, monkeypatch)  # the end of epoch 2
    rc, err = _cli(npz_data, tmp_path, capsys, epochs=3)
    line = _one_error_line(err)
    assert rc == 1
    assert f"cannot write {tmp_path / 'last.pt'}: {reason}" in line
    assert f"intact: {tmp_path / 'last.pt'} (step 4)" in line and hint in line and "resume=auto" in line
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 4  # and it really is intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"unikd-{uuid.uuid4().hex[:8]}", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield mounted
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def test_real_disk_full(npz_data, tmp_path, capsys, mounts):
    # 700 kB hold epoch 1 (best.pt, student.safetensors, last.pt: ~540 kB) but not the next last.pt
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=700k")
    mounts.append(disk)
    out = disk / "run"
    rc, err = _cli(npz_data, out, capsys, epochs=3)
    line = _one_error_line(err)
    assert rc == 1 and "No space left on device (ENOSPC)" in line, line
    assert f"intact: {out / 'last.pt'} (step 4)" in line
    assert load_checkpoint(out / "last.pt")["global_step"] == 4


def test_read_only_folder(npz_data, tmp_path, capsys, mounts):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "ro,size=64k")
    mounts.append(disk)
    rc, err = _cli(npz_data, disk / "run", capsys, epochs=1)
    line = _one_error_line(err)
    assert rc == 1 and str(disk / "run") in line and "Read-only file system" in line, line


def test_run_files_respect_the_umask(npz_data, tmp_path):
    from unikd.engine import load_config, train

    old = os.umask(0o022)
    try:
        train(load_config(None, base_overrides(npz_data, tmp_path, epochs=2)))
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir() if p.is_file()}
    assert set(modes) >= {"last.pt", "last.prev.pt", "best.pt", "student.safetensors", "summary.json",
                          "config.yaml", "metrics.jsonl"}
    assert set(modes.values()) == {"0o644"}, modes


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to find the file")
def test_disk_full_between_best_pt_and_the_first_last_pt_advises_a_resume_that_works(npz_data, tmp_path,
                                                                                      capsys, monkeypatch):
    _fail_nth_write_of("last.pt", 1, errno.ENOSPC, monkeypatch)  # epoch 1: best.pt written, last.pt not
    rc, err = _cli(npz_data, tmp_path, capsys, epochs=2)
    line = _one_error_line(err)
    best = tmp_path / "best.pt"
    assert rc == 1 and f"intact: {best}." in line and f"continue from it with resume={best}" in line, line
    monkeypatch.undo()
    rc, err = _cli(npz_data, tmp_path, capsys, epochs=2, resume=str(best))  # following the advice works
    assert rc == 0, err[-2000:]
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 8


def test_disk_full_at_start_names_the_lock_file(npz_data, tmp_path, capsys, monkeypatch):
    real_write = os.write

    def write(fd, data):  # the lock file is the first file a run writes; os.write names no file
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == ".train.lock":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to find the file")
    monkeypatch.setattr(os, "write", write)
    rc, err = _cli(npz_data, tmp_path, capsys, epochs=1)
    line = _one_error_line(err)
    assert rc == 1 and f"cannot write {tmp_path / '.train.lock'}: No space left on device" in line, line
    assert "run the command again" in line


def test_real_disk_full_before_the_first_last_pt(npz_data, tmp_path, capsys, mounts):
    # 420 kB hold config.yaml, best.pt and student.safetensors of epoch 1 (~330 kB), not its last.pt
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=420k")
    mounts.append(disk)
    out = disk / "run"
    rc, err = _cli(npz_data, out, capsys, epochs=2)
    line = _one_error_line(err)
    assert rc == 1 and "No space left on device (ENOSPC)" in line, line
    assert f"resume={out / 'best.pt'}" in line, line
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)  # "free some disk space"
    rc, err = _cli(npz_data, out, capsys, epochs=2, resume=str(out / "best.pt"))
    assert rc == 0, err[-2000:]
