"""No integrity downgrade: a file unikd wrote is refused when its checksum is missing (not loaded with a
warning), a damaged last.pt never replaces a good last.prev.pt, foreign files still load unless
integrity=strict, and no reader blocks on a FIFO."""

from __future__ import annotations

import json
import logging
import os
import struct

import pytest
import torch

from unikd import integrity
from unikd.engine.run.checkpoint import (
    CHECKPOINT_FORMAT,
    SEALED_VERSION,
    atomic_save,
    load_checkpoint,
    load_safetensors,
    save_safetensors,
)
from unikd.engine.run.last_checkpoint import PREVIOUS, load_latest, save_last
from unikd.integrity import IntegrityError


def _ckpt(step: int = 1) -> dict:
    """A training checkpoint as unikd writes it (sealed payload), small."""
    g = torch.Generator().manual_seed(step)
    weights = {"w": torch.randn(50, generator=g)}
    return {"format": CHECKPOINT_FORMAT, "version": SEALED_VERSION, "model": weights, "optimizer": {},
            "global_step": step}


def _strip_zip_checksum(path) -> None:
    """Remove the archive-comment checksum, leaving a valid zip (what re-saving or a tool would do)."""
    raw = bytearray(path.read_bytes())
    eocd = raw.rfind(b"PK\x05\x06")
    raw[eocd + 20:eocd + 22] = b"\0\0"
    path.write_bytes(bytes(raw[:eocd + 22]))


def test_best_pt_stripped_of_its_checksum_with_a_changed_weight_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    atomic_save(_ckpt(), path)
    edited = torch.load(path, weights_only=True)
    edited["model"]["w"][0] += 1.0
    torch.save(edited, path)  # no checksum now, the payload still says unikd sealed it
    refused = r"best\.pt' is damaged: it carries no sha256 checksum.*atomic_save"
    with pytest.raises(IntegrityError, match=refused):
        load_checkpoint(path)
    atomic_save(_ckpt(), path)
    _strip_zip_checksum(path)
    assert torch.load(path, weights_only=True)["global_step"] == 1  # still a loadable archive...
    with pytest.raises(IntegrityError, match="carries no sha256 checksum"):
        load_checkpoint(path)  # ...refused all the same


def test_a_0_1_0_checkpoint_and_a_plain_state_dict_load_with_a_warning(tmp_path, caplog):
    old, plain = tmp_path / "old.pt", tmp_path / "plain.pt"
    torch.save({**_ckpt(), "version": 1}, old)  # unikd 0.1.0: version 1, no checksum
    torch.save({"w": torch.ones(2)}, plain)  # another tool
    with caplog.at_level(logging.WARNING, logger="unikd"):
        assert load_checkpoint(old)["global_step"] == 1
        assert torch.equal(load_checkpoint(plain)["w"], torch.ones(2))
    assert "old.pt carries no unikd checksum" in caplog.text and "plain.pt carries no" in caplog.text


def test_integrity_strict_refuses_foreign_files_and_still_loads_sealed_ones(tmp_path):
    plain, ours = tmp_path / "plain.pt", tmp_path / "ours.pt"
    torch.save({"w": torch.ones(2)}, plain)
    atomic_save(_ckpt(), ours)
    st = tmp_path / "foreign.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    st.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<f", 1.0))
    with integrity.policy("strict"):
        refused = r"plain\.pt' carries no unikd checksum.*integrity=strict.*lenient"
        with pytest.raises(IntegrityError, match=refused):
            load_checkpoint(plain)
        with pytest.raises(IntegrityError, match="integrity=strict"):
            load_safetensors(st)
        assert load_checkpoint(ours)["global_step"] == 1
    assert load_safetensors(st)["w"].item() == 1.0  # lenient again outside the block
    with pytest.raises(ValueError, match="integrity='paranoid' is not valid"):
        with integrity.policy("paranoid"):
            pass


def test_safetensors_stripped_of_its_checksum_is_refused(tmp_path):
    path = tmp_path / "student.safetensors"
    save_safetensors({"w": torch.arange(4.0)}, path, metadata={"model": "resnet8"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    del header["__metadata__"][integrity.SAFETENSORS_KEY]
    head = json.dumps(header).encode()
    data = bytearray(raw[8 + n:])
    data[0] ^= 0x01  # and a changed weight
    path.write_bytes(struct.pack("<Q", len(head)) + head + bytes(data))
    with pytest.raises(IntegrityError, match=r"student\.safetensors' is damaged: it carries no sha256"):
        load_safetensors(path)


@pytest.mark.parametrize("damage", ["half", "empty"])
def test_a_truncated_or_empty_last_pt_never_replaces_a_good_last_prev_pt(tmp_path, caplog, damage):
    last = tmp_path / "last.pt"
    save_last(_ckpt(1), last)
    save_last(_ckpt(2), last)  # last.prev.pt: step 1
    size = last.stat().st_size
    os.truncate(last, size // 2 if damage == "half" else 0)
    path, ckpt = load_latest(tmp_path)  # resume=auto falls back
    assert path.name == PREVIOUS and ckpt["global_step"] == 1
    with caplog.at_level(logging.WARNING, logger="unikd"):
        save_last(_ckpt(3), last)  # the next save after the fallback
    assert "not keeping" in caplog.text and "last.prev.pt stays the fallback" in caplog.text
    prev = tmp_path / PREVIOUS
    assert integrity.verify_zip(prev) and load_checkpoint(prev)["global_step"] == 1
    save_last(_ckpt(4), last)  # a last.pt that verifies is kept as usual
    assert load_checkpoint(prev)["global_step"] == 3


def test_a_failed_copy_into_last_prev_pt_leaves_no_temp_file(tmp_path, monkeypatch):
    import shutil

    from unikd.engine.run import last_checkpoint

    last = tmp_path / "last.pt"
    save_last(_ckpt(1), last)

    def no_link(src, dst):
        raise OSError("no hard links here")

    def full(src, dst):
        open(dst, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(last_checkpoint.os, "link", no_link)
    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError, match="No space"):
        save_last(_ckpt(2), last)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_readers_refuse_fifos_instead_of_blocking(tmp_path):
    from unikd.cache import TeacherCache
    from unikd.engine.config import load_config

    fifo = tmp_path / "best.pt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"best\.pt' is a FIFO \(named pipe\), not a regular file"):
        load_checkpoint(fifo)
    st = tmp_path / "w.safetensors"
    os.mkfifo(st)
    with pytest.raises(ValueError, match="is a FIFO"):
        load_safetensors(st)
    cfg = tmp_path / "recipe.yaml"
    os.mkfifo(cfg)
    with pytest.raises(ValueError, match=r"config file .*recipe\.yaml' is a FIFO"):
        load_config(cfg)
    cache = tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / "manifest.json")
    with pytest.raises(ValueError, match="manifest.json' is a FIFO"):
        TeacherCache(cache)
    with pytest.raises(ValueError, match="is a FIFO"):
        integrity.sha256_file(fifo)
