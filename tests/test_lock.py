"""FolderLock knows its holder beyond the pid: a stale lock whose pid was reused by a live process (after a
container restart) is taken over, a lock really held still blocks, and without /proc or flock the pid
decides as before."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unikd import _lock, _process
from unikd._lock import FolderLock, FolderLockedError

HOLDER = """
import sys, time
from unikd._lock import FolderLock
lock = FolderLock(sys.argv[1], ".lock", "test holder").acquire()
print("locked", flush=True)
time.sleep(60)
"""

linux = pytest.mark.skipif(_process.start_ticks(os.getpid()) is None, reason="needs /proc")


@pytest.fixture
def sleeper():
    """A live process that is not the lock's writer: the pid a restarted container handed out again."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _record(pid: int, **extra: object) -> dict:
    return {"pid": pid, "host": socket.gethostname(), "started": time.time() - 3600, "what": "unikd train",
            **extra}


def _write(folder: Path, record: dict) -> None:
    (folder / ".lock").write_text(json.dumps(record))


def _takes_over(folder: Path, capsys) -> str:
    with FolderLock(folder, ".lock", "me"):
        mine = json.loads((folder / ".lock").read_text())
        assert mine["pid"] == os.getpid()
    return capsys.readouterr().err


def test_record_names_the_holder_beyond_its_pid(tmp_path):
    with FolderLock(tmp_path, ".lock", "me"):
        record = json.loads((tmp_path / ".lock").read_text())
    assert record["pid"] == os.getpid() and record["flock"] is (_lock.fcntl is not None)
    if _process.start_ticks(os.getpid()) is not None:
        assert record["pid_start"] == _process.start_ticks(os.getpid())
        assert record["boot_id"] == _process.boot_id()


@pytest.mark.skipif(_lock.fcntl is None, reason="needs flock")
def test_stale_lock_whose_pid_was_reused_is_taken_over(tmp_path, sleeper, capsys):
    # What a run killed before a container restart leaves (the record of an older unikd: no "flock",
    # no start time), its pid now belonging to another live process. The flock is free: the writer ended.
    _write(tmp_path, _record(sleeper.pid))
    err = _takes_over(tmp_path, capsys)
    assert f"taking over the stale lock {tmp_path / '.lock'}" in err and f"pid {sleeper.pid}" in err
    assert len(err.strip().splitlines()) == 1
    _write(tmp_path, _record(os.getpid(), flock=True))  # the reused pid is this very process
    assert "belongs to this process" in _takes_over(tmp_path, capsys)


@linux
@pytest.mark.parametrize("field", ["pid_start", "boot_id"])
def test_without_flock_a_live_pid_with_another_start_time_or_boot_is_stale(tmp_path, sleeper, capsys,
                                                                           monkeypatch, field):
    def no_flock(fd, op):  # a filesystem without flock (some network filesystems)
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_lock.fcntl, "flock", no_flock)
    real = _process.identity(sleeper.pid)
    _write(tmp_path, _record(sleeper.pid, flock=False, **real))
    with pytest.raises(FolderLockedError, match=f"pid {sleeper.pid}"):  # the same process: it blocks
        FolderLock(tmp_path, ".lock", "me").acquire()
    wrong = {"pid_start": real["pid_start"] + 1, "boot_id": "0" * 36}[field]
    _write(tmp_path, _record(sleeper.pid, flock=False, **{**real, field: wrong}))
    assert f"pid {sleeper.pid}" in _takes_over(tmp_path, capsys)


def test_a_held_lock_blocks_whatever_its_record_says(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        record = json.loads((tmp_path / ".lock").read_text())
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path, ".lock", "me").acquire()
        if _lock.fcntl is not None:  # the flock decides, not the record: a bogus start time changes nothing
            (tmp_path / ".lock").write_text(json.dumps({**record, "pid_start": -1, "boot_id": "x"}))
            with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
                FolderLock(tmp_path, ".lock", "me").acquire()
    finally:
        holder.kill()
        holder.wait()


def test_without_proc_the_pid_decides_as_before(tmp_path, sleeper, monkeypatch):
    monkeypatch.setattr(_process, "PROC", tmp_path / "no-proc")
    assert _process.identity(os.getpid()) == {}
    with FolderLock(tmp_path, ".lock", "me"):
        keys = set(json.loads((tmp_path / ".lock").read_text()))
    assert keys == {"pid", "host", "started", "what", "flock"}
    (tmp_path / ".lock").write_text(str(sleeper.pid))  # a holder that does not flock, alive: it blocks
    with pytest.raises(FolderLockedError, match=f"pid {sleeper.pid}"):
        FolderLock(tmp_path, ".lock", "me").acquire()
