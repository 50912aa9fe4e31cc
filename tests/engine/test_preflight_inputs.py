"""Preflight checks of the teacher's input format against the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_support import base_overrides, make_npz

from unikd.engine import load_config, train


def _distil(npz: Path, out: Path, teacher: Path, **opts: object) -> dict:
    return train(load_config(None, base_overrides(
        npz, out, method="kd", **{"teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher)}, **opts)))


def test_teacher_trained_on_other_channels(teacher_ckpt, tmp_path):
    gray = make_npz(tmp_path / "gray.npz", channels=1)
    with pytest.raises(ValueError, match=r"trained on 3-channel images but the data has 1-channel images"):
        _distil(gray, tmp_path / "run", teacher_ckpt)


def test_teacher_trained_on_another_image_size(teacher_ckpt, tmp_path):
    big = make_npz(tmp_path / "big.npz", size=16)
    match = r"trained on 8x8 images but the data gives 16x16; set data.image_size=8"
    with pytest.raises(ValueError, match=match):
        _distil(big, tmp_path / "run", teacher_ckpt)


def test_teacher_that_cannot_run_on_the_images_is_a_clear_error():
    # a plain state_dict records nothing: the dummy forward fails, and the error says why
    import torch

    from unikd.engine.loop.preflight import check_teacher_classes
    from unikd.models import create_model

    teacher = create_model("tiny_cnn", num_classes=4).eval()
    match = r"teacher 'tiny_cnn' cannot run on the data's images \(shape \(1, 8, 8\)\)"
    with pytest.raises(ValueError, match=match):
        check_teacher_classes(teacher, torch.zeros(2, 1, 8, 8), 4, "tiny_cnn")
