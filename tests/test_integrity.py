"""unikd.integrity and the atomic writes: every damaged file is refused by name, old files still load,
other readers still read our files, temp files record their writer, files respect the umask."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from unikd import integrity
from unikd._atomic import atomic_write, atomic_write_text, stale_temp_files, temp_path
from unikd._lock import FolderLock, FolderLockedError
from unikd.engine.run.checkpoint import atomic_save, load_checkpoint, load_safetensors, save_safetensors
from unikd.integrity import IntegrityError


def _weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(64, 32, 3, 3, generator=g), "fc.bias": torch.randn(10, generator=g)}


def _damage(path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def _flip_bit(path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def test_checkpoint_with_64_garbled_bytes_is_refused_by_name(tmp_path):
    path = tmp_path / "best.pt"
    atomic_save({"model": _weights(), "epoch": 3}, path)
    _damage(path, path.stat().st_size // 2, os.urandom(64))  # inside the tensor data
    with pytest.raises(IntegrityError, match=r"best\.pt' is damaged.*last\.prev\.pt"):
        load_checkpoint(path)


def test_one_flipped_bit_anywhere_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"model": _weights(), "epoch": 3}, path)
    size = path.stat().st_size
    for offset in (40, size // 3, size - 200, size - 30):  # header, data, central directory, the checksum
        atomic_save({"model": _weights(), "epoch": 3}, path)
        _flip_bit(path, offset)
        with pytest.raises(ValueError, match=r"last\.pt"):
            load_checkpoint(path)


def test_safetensors_with_a_flipped_bit_is_refused(tmp_path):
    path = tmp_path / "student.safetensors"
    save_safetensors(_weights(), path, metadata={"model": "resnet8"})
    _flip_bit(path, path.stat().st_size - 100)  # tensor data
    with pytest.raises(IntegrityError, match=r"student\.safetensors' is damaged"):
        load_safetensors(path)


def test_other_readers_still_read_our_files(tmp_path):
    pt, st = tmp_path / "a.pt", tmp_path / "a.safetensors"
    atomic_save({"model": _weights()}, pt)
    save_safetensors(_weights(), st, metadata={"model": "resnet8"})
    plain = torch.load(pt, weights_only=True)  # the checksum lives in the zip comment
    assert torch.equal(plain["model"]["fc.bias"], _weights()["fc.bias"])
    with zipfile.ZipFile(pt) as z:
        assert z.comment.startswith(integrity.ZIP_MAGIC) and z.testzip() is None
    safetensors = pytest.importorskip("safetensors.torch")
    theirs = safetensors.load_file(str(st))
    assert all(torch.equal(theirs[k], v) for k, v in _weights().items())


def test_files_without_checksum_load_with_a_warning(tmp_path, caplog):
    old_pt, old_st = tmp_path / "old.pt", tmp_path / "old.safetensors"
    torch.save({"model": _weights()}, old_pt)  # how unikd wrote checkpoints before checksums
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(_weights(), str(old_st))
    with caplog.at_level(logging.WARNING, logger="unikd"):
        assert torch.equal(load_checkpoint(old_pt)["model"]["fc.bias"], _weights()["fc.bias"])
        assert torch.equal(load_safetensors(old_st)["fc.bias"], _weights()["fc.bias"])
    assert "old.pt carries no unikd checksum" in caplog.text
    assert "old.safetensors carries no unikd checksum" in caplog.text


def test_json_and_listed_files(tmp_path):
    sealed = integrity.seal_json({"a": 1, "b": [1, 2]})
    assert integrity.verify_json(sealed, "m.json", what="manifest")
    with pytest.raises(IntegrityError, match="manifest 'm.json' is damaged"):
        integrity.verify_json({**sealed, "a": 2}, "m.json", what="manifest")
    assert not integrity.verify_json({"a": 1}, "m.json", what="manifest")  # no checksum
    f = tmp_path / "shard.npy"
    f.write_bytes(b"x" * 100)
    assert integrity.verify_file(f, integrity.sha256_file(f), what="shard")
    with pytest.raises(IntegrityError):
        integrity.verify_file(f, "0" * 64, what="shard")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_save({"x": torch.ones(1)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_disk_full_during_torch_save_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"v": torch.tensor(1)}, path)

    real = integrity.HashingWriter.write

    def full(self, data):
        if self.digest.digest_size and len(data) > 100:
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error
        return real(self, data)

    monkeypatch.setattr(integrity.HashingWriter, "write", full)
    with pytest.raises(OSError) as info:
        atomic_save({"v": torch.randn(1000)}, path)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert int(load_checkpoint(path)["v"]) == 1  # the old file is intact
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left


def test_temp_files_name_their_writer_and_only_dead_writers_are_swept(tmp_path):
    tmp = temp_path(tmp_path / "last.pt")
    assert tmp.name.startswith(f".last.pt.{os.getpid()}.") and tmp.name.endswith(".tmp")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_tmp = tmp_path / f".last.pt.{sleeper.pid}.abcd1234.tmp"
        dead_tmp = tmp_path / f".best.pt.{dead.pid}.abcd1234.tmp"
        own_tmp = tmp_path / f".config.yaml.{os.getpid()}.abcd1234.tmp"
        for f in (live_tmp, dead_tmp, own_tmp):
            f.write_bytes(b"partial")
        assert list(stale_temp_files(tmp_path)) == [dead_tmp]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_atomic_write_failure_leaves_no_temp(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="x.bin"):
        atomic_write(tmp_path / "x.bin", boom)
    assert os.listdir(tmp_path) == []


LOCK_HOLDER = """
import sys, time
from unikd._lock import FolderLock
lock = FolderLock(sys.argv[1], ".lock", "test holder").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_folder_lock_names_the_holder_and_is_freed_when_it_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path, ".lock", "me").acquire()
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
        holder.wait()
    assert (tmp_path / ".lock").exists()
    with FolderLock(tmp_path, ".lock", "me"):  # the kernel released the dead holder's lock
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_folder_lock_respects_a_live_pid_file_and_takes_a_dead_ones(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))  # a holder that does not flock
        with pytest.raises(FolderLockedError, match=f"pid {sleeper.pid}"):
            FolderLock(tmp_path, ".lock", "me").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    time.sleep(0.05)
    with FolderLock(tmp_path, ".lock", "me") as lock:
        assert lock.held
