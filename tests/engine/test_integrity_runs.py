"""Integrity through the harness: a re-saved best.pt is refused by eval and as a teacher, a truncated
last.pt is never promoted over last.prev.pt after the fallback, integrity=strict refuses foreign teacher
weights, and temp files of earlier writers (a dead pid, or this very pid in a new container) are swept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness_support import base_overrides

from unikd import integrity
from unikd.cli import main
from unikd.engine import load_config, train
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.models import create_model


def _train(npz: Path, out: Path, **opts: object) -> dict:
    return train(load_config(None, base_overrides(npz, out, **opts)))


def _teacher(ckpt: Path, **extra: object) -> dict[str, object]:
    return {"method": "kd", "teacher.model": "tiny_cnn", "teacher.checkpoint": str(ckpt), **extra}


def test_a_re_saved_best_pt_is_refused_by_eval_and_as_a_teacher(npz_data, tmp_path, capsys):
    run = tmp_path / "run"
    _train(npz_data, run, epochs=1)
    best = run / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    first = next(iter(ckpt["model"]))
    ckpt["model"][first] = ckpt["model"][first] + 1.0  # a changed weight ...
    torch.save(ckpt, best)  # ... and no checksum
    assert main(["eval", str(best)]) == 1
    err = capsys.readouterr().err
    assert f"checkpoint {str(best)!r} is damaged: it carries no sha256 checksum" in err, err
    with pytest.raises(integrity.IntegrityError, match=r"best\.pt' is damaged"):
        _train(npz_data, tmp_path / "student", epochs=1, **_teacher(best))


def test_resume_after_a_truncated_last_pt_keeps_last_prev_pt_good(npz_data, tmp_path, caplog):
    _train(npz_data, tmp_path, epochs=2)  # last.pt: step 8, last.prev.pt: step 4
    last, prev = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    os.truncate(last, last.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="unikd"):
        _train(npz_data, tmp_path, epochs=2, resume="auto")  # falls back to step 4, then saves once
    assert "resuming from" in caplog.text and "not keeping" in caplog.text
    assert integrity.verify_zip(prev) and load_checkpoint(prev)["global_step"] == 4
    assert load_checkpoint(last)["global_step"] == 8


def test_integrity_strict_refuses_a_foreign_teacher_that_lenient_loads(npz_data, tmp_path, caplog):
    plain = tmp_path / "plain.pt"
    torch.manual_seed(0)
    torch.save(create_model("tiny_cnn", num_classes=4).state_dict(), plain)  # another tool's file
    with pytest.raises(integrity.IntegrityError, match=r"plain\.pt' carries no unikd checksum.*strict"):
        _train(npz_data, tmp_path / "strict", epochs=1, integrity="strict", **_teacher(plain))
    assert not (tmp_path / "strict" / "last.pt").exists()
    with caplog.at_level(logging.WARNING, logger="unikd"):
        assert _train(npz_data, tmp_path / "lenient", epochs=1, **_teacher(plain))["finished"]
    assert "plain.pt carries no unikd checksum" in caplog.text
    with pytest.raises(ValueError, match="integrity='paranoid' is not valid"):
        load_config(None, ["integrity=paranoid"])


def test_stale_temp_files_of_earlier_writers_are_swept_at_start(npz_data, tmp_path):
    _train(npz_data, tmp_path, epochs=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a kill between linking last.pt and renaming it to last.prev.pt leaves a full-size temp file; in a
    # container every run may be pid 1, so the earlier writer's pid can be this process's own
    stale = [tmp_path / f".last.prev.pt.{pid}.abcd1234.tmp" for pid in (dead.pid, os.getpid())]
    for path in stale:
        os.link(tmp_path / "last.pt", path)
    _train(npz_data, tmp_path, epochs=2, resume="auto")
    assert not [p.name for p in stale if p.exists()]
