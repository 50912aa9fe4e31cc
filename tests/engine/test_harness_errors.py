"""The harness's error paths: missing data/checkpoints, mismatched models, weak teachers, NaN losses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from harness_support import base_overrides, make_npz

from unikd.engine import NonFiniteLossError, load_config, train
from unikd.engine.objective.objective import Objective
from unikd.engine.run.checkpoint import load_checkpoint, save_safetensors
from unikd.models import create_model


def _train(npz: Path, out: Path, **opts: object) -> dict:
    return train(load_config(None, base_overrides(npz, out, **opts)))


def _teacher(ckpt: Path | str, name: str = "tiny_cnn", **extra: object) -> dict[str, object]:
    return {"method": "kd", "teacher.model": name, "teacher.checkpoint": str(ckpt), **extra}


def test_missing_data(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        _train(tmp_path / "nope.npz", tmp_path / "run")


def test_missing_teacher_settings_and_checkpoint(npz_data, tmp_path):
    with pytest.raises(ValueError, match=r"set teacher.model=<name> and teacher.checkpoint"):
        _train(npz_data, tmp_path, method="nkd")
    with pytest.raises(FileNotFoundError, match="teacher.checkpoint .*nope.pt' does not exist"):
        _train(npz_data, tmp_path, **_teacher(tmp_path / "nope.pt"))


def test_teacher_checkpoint_from_a_different_model(npz_data, teacher_ckpt, tmp_path):
    with pytest.raises(ValueError, match="saved from model 'tiny_cnn', but teacher.model is 'resnet8'"):
        _train(npz_data, tmp_path, **_teacher(teacher_ckpt, "resnet8"))
    # a plain state_dict carries no model name: the key/shape check explains the mismatch instead
    plain = tmp_path / "plain.pt"
    torch.save(create_model("tiny_cnn", num_classes=4, width=8).state_dict(), plain)
    with pytest.raises(ValueError, match=r"does not fit model TinyCNN: .*shape mismatches"):
        _train(npz_data, tmp_path, **_teacher(plain))


def test_teacher_with_other_class_count(teacher_ckpt, tmp_path):
    five = make_npz(tmp_path / "five.npz", classes=5, per_class=8)
    with pytest.raises(ValueError, match="predicts 4 classes but the student has 5"):
        _train(five, tmp_path / "run", **_teacher(teacher_ckpt))


def _random_teacher(tmp_path: Path) -> Path:
    """An untrained tiny_cnn as a .safetensors teacher (near-chance accuracy)."""
    torch.manual_seed(1)
    path = tmp_path / "untrained.safetensors"
    save_safetensors(create_model("tiny_cnn", num_classes=4).state_dict(), path)
    return path


def test_teacher_below_min_top1(npz_data, tmp_path):
    with pytest.raises(ValueError, match=r"below teacher.min_top1=99.0"):
        _train(npz_data, tmp_path, **_teacher(_random_teacher(tmp_path), **{"teacher.min_top1": 99}))


def test_resume_errors(npz_data, tmp_path):
    _train(npz_data, tmp_path, epochs=1)
    with pytest.raises(ValueError, match=r"cannot resume .*other settings \(model 'tiny_cnn' -> 'resnet8'\)"):
        _train(npz_data, tmp_path, model="resnet8", resume="auto")
    with pytest.raises(FileNotFoundError, match="resume=.*no such checkpoint"):
        _train(npz_data, tmp_path / "other", resume=str(tmp_path / "missing.pt"))
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="truncated"):
        _train(npz_data, tmp_path, resume="auto")


def test_non_finite_loss_names_step_and_term_and_keeps_last_good_checkpoint(npz_data, tmp_path, monkeypatch):
    original = Objective.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third step's method term blows up
            terms["kd"] = terms["kd"] * math.inf
            terms["loss"] = terms["loss"] + terms["kd"]
        return terms

    monkeypatch.setattr(Objective, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(epoch 1\): term 'kd' = inf.*last.pt \(step 2\)"):
        _train(npz_data, tmp_path, checkpoint_every=1, **_teacher(_random_teacher(tmp_path)))
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.jsonl").read_text()  # no epoch finished
