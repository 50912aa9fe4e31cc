"""Distilling with a transfer set through the harness: KD + KD³'s terms + the instance selection train end to
end on digits with digits' own images as the unlabeled transfer set (no shared data needed) and on MNIST
(skipped without the shared data); the preflight states the transfer set, the target and the selection; the
step's target is the teacher's argmax; a resumed run is exact; a teacher-output cache serves only the stream
it replayed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from unikd.cache import CacheMismatchError
from unikd.cache.build import build_teacher_cache
from unikd.engine import load_config, train
from unikd.engine.config.transfer import step_target
from unikd.engine.loop.setup import build
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
SHARED = Path(os.environ.get("UNIKD_SHARED_DATA",
                            Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
DIGITS = ["model=tiny_cnn", "data.name=digits", "data.val_split=10", "data.crop_padding=1",
          "data.hflip=false", "data.batch_size=64", "optim.lr=0.1", "sched.milestones=[1]", "device=cpu",
          "tensorboard=false"]
KD3 = ["data.transfer={name: digits}", "loss.ce_weight=0", "selection.method=kd3", "selection.threshold=0.4",
       "loss.terms={kd: {temperature: 4}, kd3_align: {weight: 1}, kd3_mixdist: {weight: 0.5}}"]


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_teacher")
    torch.set_num_threads(1)
    train(load_config(None, [*DIGITS, "epochs=3", "sched.milestones=[2]", f"out_dir={out}"]))
    return ["teacher.model=tiny_cnn", f"teacher.checkpoint={out / 'best.pt'}"]


def test_kd3_on_an_unlabeled_transfer_set_trains_end_to_end(digits_teacher, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="unikd"):
        summary = train(load_config(None, [*DIGITS, *digits_teacher, *KD3, "epochs=2",
                                           f"out_dir={tmp_path}"]))
    text = caplog.text
    assert "transfer          student trains on digits (train split): 1342 images, labels ignored" in text
    assert "the task's validation images held out; validation and test: digits" in text
    assert ("target            the teacher's argmax of each training view (only train/ce and "
            "train/top1") in text
    assert "selection         kd3: rows with max(a*p_teacher + (1-a)*p_student) >= 0.4 train" in text
    assert "data              digits: 1342 transfer / 100 val" in text
    assert summary["finished"] and summary["method"] == "kd+kd3_align+kd3_mixdist"
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert 0.0 < r["train/selected"] <= 1.0 and r["train/kd3_align"] > 0 and r["train/kd3_mixdist"] > 0
    assert summary["best_top1"] > 30.0  # 10 classes: well above chance after 2 epochs on teacher outputs only
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert {"terms.kd3_align.proj.weight", "terms.kd3_mixdist.student_head.weight"} <= set(ckpt["objective"])
    assert not any(k.startswith("terms.kd3_align.fc") or "stage1" in k for k in ckpt["objective"])


def test_the_student_never_sees_a_label(digits_teacher, tmp_path):
    c = build(load_config(None, [*DIGITS, *digits_teacher, *KD3, "epochs=1", f"out_dir={tmp_path}"]), CPU)
    try:
        assert len(c.train_ds) == 1342 and not bool(c.train_ds.labels.any())
        batch = next(iter(c.train_loader))
        logits = c.teacher(batch.images, 0, batch.index)
        assert torch.equal(step_target(c.cfg, batch.target, logits), logits.argmax(dim=1))
        assert c.objective.selection is not None and c.val_ds.labels.unique().numel() == 10
    finally:
        c.remove_taps()


def test_a_resumed_kd3_run_is_exact(digits_teacher, tmp_path):
    # a fixed ramp: with ramp_epochs null the teacher's share follows the run's length, which resuming
    # with more epochs changes
    base = [*DIGITS, *digits_teacher, *KD3, "selection.ramp_epochs=2"]
    train(load_config(None, [*base, "epochs=2", f"out_dir={tmp_path / 'straight'}"]))
    train(load_config(None, [*base, "epochs=1", f"out_dir={tmp_path / 'resumed'}"]))
    train(load_config(None, [*base, "epochs=2", f"out_dir={tmp_path / 'resumed'}", "resume=auto"]))
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["objective"][k], b["objective"][k]) for k in a["objective"])


def test_a_cache_serves_only_the_transfer_stream_it_replayed(digits_teacher, tmp_path):
    kd = [*DIGITS, *digits_teacher, "method=kd", "loss.ce_weight=0", "epochs=2"]
    transfer = ["data.transfer={name: digits}", "selection.method=kd3", "selection.threshold=0.4"]
    task_cache = build_teacher_cache(load_config(None, kd), tmp_path / "task", dtype="fp32",
                                     show_progress=False)
    with pytest.raises(CacheMismatchError, match=r"built for the task's own training split, but this run "
                                                 r"trains on the transfer set digits \(train split, 1342 "
                                                 r"images\)"):
        build(load_config(None, [*kd, *transfer, f"teacher.cache={task_cache}"]), CPU)
    cached = build_teacher_cache(load_config(None, [*kd, *transfer]), tmp_path / "transfer", dtype="fp32",
                                 show_progress=False)
    with pytest.raises(CacheMismatchError, match="built for the transfer set digits"):
        build(load_config(None, [*kd, f"teacher.cache={cached}"]), CPU)
    live = train(load_config(None, [*kd, *transfer, f"out_dir={tmp_path / 'live'}"]))
    replay = train(load_config(None, [*kd, *transfer, f"teacher.cache={cached}",
                                      f"out_dir={tmp_path / 'cached'}"]))
    assert live["finished"] and replay["finished"]
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("live", "cached"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_argmax_targets_on_labeled_data(digits_teacher, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="unikd"):
        summary = train(load_config(None, [*DIGITS, *digits_teacher, "method=nkd",
                                           "loss.target=teacher_argmax", "epochs=1", f"out_dir={tmp_path}"]))
    assert "the teacher's argmax of each training view (CE, nkd train on it;" in caplog.text
    assert "transfer  " not in caplog.text  # the task's own (labeled) split
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert summary["finished"] and 0.0 <= record["train/top1"] <= 100.0 and record["train/nkd"] > 0


@pytest.mark.skipif(not (SHARED / "mnist.npz").is_file(), reason=f"{SHARED / 'mnist.npz'} is absent (set "
                    "UNIKD_SHARED_DATA to the folder holding mnist.npz)")
def test_mnist_as_the_transfer_set_of_digits(digits_teacher, tmp_path, caplog):
    mnist = ["data.transfer.name=npz", f"data.transfer.root={SHARED / 'mnist.npz'}",
             "data.transfer.limit=2000"]
    with caplog.at_level(logging.INFO, logger="unikd"):
        summary = train(load_config(None, [*DIGITS, *digits_teacher, *mnist, "method=kd", "loss.ce_weight=0",
                                           "epochs=1", f"out_dir={tmp_path}"]))
    assert "2000 images, labels ignored, resized to 8x8; validation and test: digits" in caplog.text
    assert summary["finished"]
