"""Checkpoint I/O: atomic writes, clear load errors, our safetensors codec, load_state_dict_any."""

import json
import os
import struct
import sys

import pytest
import torch

from unikd.engine.run import checkpoint as ck
from unikd.engine.run.checkpoint import (
    atomic_save,
    load_checkpoint,
    load_safetensors,
    load_state_dict_any,
    safetensors_metadata,
    save_safetensors,
)


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 4, generator=g),
        "b.bias": torch.randn(4, generator=g).double(),
        "h": torch.randn(2, 2, generator=g).half(),
        "bf": torch.randn(5, generator=g).bfloat16(),
        "n": torch.tensor(7, dtype=torch.int64),
        "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "strided": torch.arange(12.0).reshape(3, 4).t(),  # non-contiguous
    }


def test_atomic_save_round_trip_and_no_temp_files(tmp_path):
    obj = {"model": {"w": torch.ones(2)}, "epoch": 3, "meta": ["a", 1.5]}
    path = tmp_path / "sub" / "last.pt"
    atomic_save(obj, path)
    atomic_save({**obj, "epoch": 4}, path)  # overwrite
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert os.listdir(path.parent) == ["last.pt"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    atomic_save({"v": torch.tensor(1)}, path)

    def boom(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(load_checkpoint(path)["v"]) == 1
    assert os.listdir(tmp_path) == ["best.pt"]


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(missing)
    good = tmp_path / "good.pt"
    atomic_save({"model": {"w": torch.randn(100)}}, good)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="trunc.pt.*truncated or not a PyTorch checkpoint"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(ValueError, match="notes.pt"):
        load_checkpoint(text)
    with pytest.raises(ValueError, match="is a folder"):
        load_checkpoint(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_errors_are_not_called_corruption(tmp_path):
    path = tmp_path / "ok.pt"
    atomic_save({"w": torch.ones(1)}, path)
    with pytest.raises(ValueError, match="ok.pt' could not be loaded") as exc:
        load_checkpoint(path, map_location="cuda")
    assert "truncated" not in str(exc.value)


class Custom:  # arbitrary objects must not be unpickled
    pass


def test_weights_only_rejects_objects(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"x": Custom()}, path)
    with pytest.raises(ValueError, match="obj.pt.*weights_only"):
        load_checkpoint(path)


def test_safetensors_round_trip(tmp_path):
    t = _tensors()
    path = tmp_path / "student.safetensors"
    save_safetensors(t, path, metadata={"model": "resnet20", "epoch": "3"})
    back = load_safetensors(path)
    assert back.keys() == t.keys()
    for k in t:
        assert back[k].dtype == t[k].dtype and back[k].shape == t[k].shape and torch.equal(back[k], t[k]), k
    assert safetensors_metadata(path) == {"model": "resnet20", "epoch": "3"}


def test_safetensors_layout_follows_the_spec(tmp_path):
    path = tmp_path / "x.safetensors"
    save_safetensors({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3], dtype=torch.int16)}, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    assert header["a"] == {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    assert header["b"] == {"dtype": "I16", "shape": [1], "data_offsets": [8, 10]}
    data = raw[8 + n :]
    assert len(data) == 10
    assert struct.unpack("<2f", data[:8]) == (1.0, 2.0) and struct.unpack("<h", data[8:]) == (3,)


def test_safetensors_interop_with_reference_package(tmp_path):
    st = pytest.importorskip("safetensors.torch", reason="optional 'safetensors' package not installed")
    t = {k: v.contiguous() for k, v in _tensors().items()}
    ours = tmp_path / "ours.safetensors"
    save_safetensors(t, ours, metadata={"k": "v"})
    theirs = st.load_file(str(ours))
    assert all(torch.equal(theirs[k], t[k]) for k in t)
    ref = tmp_path / "ref.safetensors"
    st.save_file(t, str(ref), metadata={"k": "v"})
    back = load_safetensors(ref)
    assert all(torch.equal(back[k], t[k]) and back[k].dtype == t[k].dtype for k in t)


def test_safetensors_corrupt_files(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors({"w": torch.randn(10)}, path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-4])
    with pytest.raises(ValueError, match="cut.safetensors.*truncated"):
        load_safetensors(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(ValueError, match="tiny.safetensors"):
        load_safetensors(tiny)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ValueError, match="not JSON"):
        load_safetensors(junk)
    with pytest.raises(FileNotFoundError):
        load_safetensors(tmp_path / "missing.safetensors")


def test_safetensors_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="metadata"):
        save_safetensors({"w": torch.ones(1)}, tmp_path / "a.safetensors", metadata={"epoch": 3})
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        save_safetensors({"w": [1.0]}, tmp_path / "a.safetensors")
    if hasattr(torch, "complex64"):
        with pytest.raises(ValueError, match="dtype"):
            save_safetensors({"w": torch.ones(1, dtype=torch.complex64)}, tmp_path / "a.safetensors")


def test_load_state_dict_any(tmp_path):
    sd = {"conv.weight": torch.randn(2, 2), "bn.num_batches_tracked": torch.tensor(1)}
    ours = tmp_path / "best.pt"
    atomic_save({"model": sd, "epoch": 2, "optimizer": {"state": {}}}, ours)
    plain = tmp_path / "plain.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, plain)  # DDP-style prefix is stripped
    st = tmp_path / "w.safetensors"
    save_safetensors(sd, st)
    for p in (ours, plain, st):
        got = load_state_dict_any(p)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd), p
    other = tmp_path / "other.pt"
    torch.save({"epoch": 1, "note": "x"}, other)
    with pytest.raises(ValueError, match="other.pt.*without model weights"):
        load_state_dict_any(other)
    lst = tmp_path / "list.pt"
    torch.save([1, 2], lst)
    with pytest.raises(ValueError, match="list.pt"):
        load_state_dict_any(lst)


@pytest.mark.skipif(sys.byteorder != "little", reason="safetensors is little-endian")
def test_shared_storage_written_per_name(tmp_path):
    w = torch.randn(4)
    path = tmp_path / "tied.safetensors"
    save_safetensors({"a": w, "b": w, "c": w[:2]}, path)
    back = load_safetensors(path)
    assert torch.equal(back["a"], w) and torch.equal(back["b"], w) and torch.equal(back["c"], w[:2])
