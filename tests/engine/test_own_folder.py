"""A file that unikd wrote for one run, copied into another run's folder, is refused by its run id where it is
read outside a resume: ``unikd eval`` of a ``best.pt``, and a ``best.pt`` or ``student.safetensors`` given as
``teacher.checkpoint``. A FIFO in place of ``run.json`` is refused instead of blocking."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.eval.saved import evaluate_checkpoint
from unikd.engine.run.identity import RUN_FILE, read_run_id
from unikd.engine.run.weights import read_weights


def _train(npz: Path, out: Path, **opts: object) -> dict:
    return train(load_config(None, base_overrides(npz, out, **opts)))


def test_another_runs_files_are_refused_by_run_id(npz_data, tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    _train(npz_data, a)
    _train(npz_data, b)
    assert evaluate_checkpoint(a / "best.pt", device="cpu")["top1"] is not None  # its own folder: fine
    read_weights(a / "student.safetensors", what="teacher.checkpoint")
    for name in ("best.pt", "student.safetensors"):
        shutil.copyfile(b / name, a / name)
    pattern = rf"written by another run \(run id {read_run_id(b)}\) than the run of its folder \(run id " \
              rf"{read_run_id(a)} in .*{RUN_FILE}\)"
    with pytest.raises(ValueError, match=pattern):
        evaluate_checkpoint(a / "best.pt", device="cpu")
    for name in ("best.pt", "student.safetensors"):
        with pytest.raises(ValueError, match=r"teacher.checkpoint .*written by another run"):
            read_weights(a / name, what="teacher.checkpoint")
    # a single file copied on its own, outside any run folder, carries no folder to contradict it
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copyfile(b / "best.pt", lone / "best.pt")
    assert evaluate_checkpoint(lone / "best.pt", device="cpu")["top1"] is not None


def test_a_fifo_run_file_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / RUN_FILE)
    with pytest.raises(ValueError, match=r"run file .*is a FIFO"):
        read_run_id(tmp_path)
