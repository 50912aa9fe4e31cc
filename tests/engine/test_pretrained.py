"""The teacher registry (checksum-verified fetch from file:// URLs, never the network) and the
``pretrained`` / ``teacher.pretrained`` config keys."""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.teacher import pretrained as pt
from unikd.models import create_model


def _published_file(model: torch.nn.Module) -> bytes:
    """A checkpoint shaped like the CRD/mdistiller teacher files: state dict under "model" plus the
    training options (argparse.Namespace) and a numpy accuracy."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": argparse.Namespace(lr=0.05), "epoch": 240,
                "accuracy": np.float64(79.42)}, buf)
    return buf.getvalue()


@pytest.fixture
def entry(tmp_path, monkeypatch):
    """A registry entry for a tiny_cnn on 4 classes served from a file:// URL, with the cache in tmp."""
    torch.manual_seed(0)
    model = create_model("tiny_cnn", num_classes=4)
    raw = _published_file(model)
    src = tmp_path / "published" / "ckpt_epoch_240.pth"
    src.parent.mkdir()
    src.write_bytes(raw)
    e = pt.TeacherWeights(
        name="npz/tiny_cnn", model="tiny_cnn", dataset="npz", num_classes=4,
        sources=(pt.Source(src.as_uri()),),
        sha256=hashlib.sha256(raw).hexdigest(), top1=99.0, mean=(0.3, 0.3, 0.3), std=(0.2, 0.2, 0.2),
        reference="test",
    )
    monkeypatch.setitem(pt.TEACHERS, e.name, e)
    monkeypatch.setenv("UNIKD_CACHE", str(tmp_path / "cache"))
    return e, model


def test_fetch_verifies_converts_and_caches(entry, tmp_path):
    e, model = entry
    calls = []

    def counting(url, dest):
        calls.append(url)
        pt._urllib_fetch(url, dest)

    path = pt.fetch_teacher(e.name, fetch=counting)
    assert path == tmp_path / "cache" / "teachers" / "npz__tiny_cnn.pt"
    state = torch.load(path, weights_only=True)  # a plain state dict now
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert pt.fetch_teacher(e.name, fetch=counting) == path and len(calls) == 1  # cached, verified
    path.write_bytes(b"tampered")
    pt.fetch_teacher(e.name, fetch=counting)  # the sidecar hash no longer matches: rebuilt from the download
    assert len(calls) == 1 and torch.load(path, weights_only=True).keys() == state.keys()


def test_archive_member_source(entry, tmp_path, monkeypatch):
    e, model = entry
    tar_path = tmp_path / "teachers.tar"
    with tarfile.open(tar_path, "w") as tf:
        tf.add(Path(e.sources[0].url.removeprefix("file://")), arcname="teachers/tiny/ckpt_epoch_240.pth")
    member = pt.Source(tar_path.as_uri(), "teachers/tiny/ckpt_epoch_240.pth")
    monkeypatch.setitem(pt.TEACHERS, e.name, pt.TeacherWeights(**{**e.__dict__, "sources": (member,)}))
    state = torch.load(pt.fetch_teacher(e.name), weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_wrong_checksum_is_refused_and_nothing_is_kept(entry, tmp_path, monkeypatch):
    e, _ = entry
    monkeypatch.setitem(pt.TEACHERS, e.name, pt.TeacherWeights(**{**e.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="refusing to load it"):
        pt.fetch_teacher(e.name)
    assert not (tmp_path / "cache" / "teachers" / "npz__tiny_cnn.pt").exists()


def test_offline_error_names_the_folder_to_fill(entry, tmp_path):
    e, _ = entry

    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(FileNotFoundError) as err:
        pt.fetch_teacher(e.name, fetch=offline)
    assert str(tmp_path / "cache" / "teachers" / "downloads") in str(err.value)
    assert "ckpt_epoch_240.pth" in str(err.value) and e.sha256 in str(err.value)


def test_registry_entries_are_consistent():
    from unikd.models import list_models

    assert "cifar100/resnet32x4" in pt.list_teachers()
    for name in pt.list_teachers():
        e = pt.get_teacher_weights(name)
        assert e.name == f"{e.dataset}/{e.model}" and e.model in list_models()
        assert len(e.sha256) == 64 and 0 < e.top1 < 100 and len(e.mean) == len(e.std) == 3
    with pytest.raises(ValueError, match="Did you mean 'cifar100/resnet32x4'"):
        pt.get_teacher_weights("cifar100/resnet32x5")
    with pytest.raises(ValueError, match="64 lowercase hex"):
        bad = {**pt.TEACHERS["cifar100/resnet32x4"].__dict__, "sha256": "abc"}
        pt.register_teacher(pt.TeacherWeights(**bad))


def test_teacher_pretrained_trains_from_the_registry(entry, npz_data, tmp_path, caplog):
    caplog.set_level("INFO", logger="unikd")
    out = tmp_path / "nkd"
    cfg = load_config(None, base_overrides(npz_data, out, method="nkd", epochs=1,
                                           **{"teacher.model": "tiny_cnn", "teacher.pretrained": "true"}))
    summary = train(cfg)
    assert summary["finished"] and summary["teacher_model"] == "tiny_cnn"
    text = caplog.text
    assert re.search(r"^teacher\s+tiny_cnn", text, re.M)
    assert "teacher trained with mean=(0.300, 0.300, 0.300)" in text  # the registry's normalisation


def test_pretrained_config_errors(npz_data, tmp_path):
    with pytest.raises(ValueError, match="both set"):
        load_config(None, ["teacher.pretrained=true", "teacher.checkpoint=x.pt"])
    cfg = load_config(None, base_overrides(npz_data, tmp_path / "s", epochs=1, pretrained="true"))
    with pytest.raises(ValueError, match="no pretrained weights for zoo model 'tiny_cnn' on 'npz'"):
        train(cfg)
