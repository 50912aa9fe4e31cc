"""The feature losses (RKD, PKT, SP, CRD, ReviewKD, ND) through the real harness: a two-epoch run of each,
the CRD + KD and KD + ND (KD++) objectives, and an exact resume of a killed CRD run, memory banks included."""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest
import torch
from harness_support import base_overrides, subprocess_env, train_command
from test_harness_resume import _assert_identical, _run_until

from unikd.engine import load_config, train
from unikd.engine.loop.setup import build
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))

# State each method must leave in the checkpoint's "objective" entry (trained heads / fusion modules,
# memory banks and their normalisers, class sums).
STATE = {
    "rkd": set(),
    "pkt": set(),
    "sp": set(),
    "crd": {"terms.crd.student_head.weight", "terms.crd.memory_student", "terms.crd.memory_teacher",
            "terms.crd.normalisers"},
    "reviewkd": {"terms.reviewkd.abfs.0.conv1.0.weight", "terms.reviewkd.abfs.3.conv2.1.running_var"},
    "nd": {"terms.nd.class_sums", "terms.nd.class_counts", "terms.nd.fitted"},
}


def _teacher(ckpt) -> dict[str, str]:
    return {"teacher.model": "tiny_cnn", "teacher.checkpoint": str(ckpt)}


def _metrics(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", sorted(STATE))
def test_each_feature_method_trains_two_epochs(method, npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    summary = train(load_config(None, base_overrides(npz_data, out, method=method, **_teacher(teacher_ckpt))))
    assert summary["finished"] and summary["method"] == method
    lines = _metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert r[f"train/{method}"] == r[f"train/{method}"] and r[f"train/{method}"] is not None
    objective = load_checkpoint(out / "last.pt")["objective"]
    assert STATE[method] <= set(objective), sorted(objective)
    if method == "crd":  # every training row went through the banks (128 rows, unit norm after an update)
        torch.testing.assert_close(objective["terms.crd.memory_student"].norm(dim=1), torch.ones(128))
        assert bool((objective["terms.crd.normalisers"] > 0).all())
    if method == "nd":  # class means from the first epoch's teacher embeddings, then frozen
        assert bool(objective["terms.nd.fitted"]) and int(objective["terms.nd.class_counts"].sum()) == 128


def test_context_and_taps_of_the_feature_terms(npz_data, teacher_ckpt, tmp_path):
    terms = "loss.terms={crd: {num_negatives: 50}, reviewkd: {warmup_epochs: 1}, sp: {}, nd: {}}"
    c = build(load_config(None, base_overrides(npz_data, tmp_path, **_teacher(teacher_ckpt)) + [terms]), CPU)
    crd = c.objective.terms["crd"]
    # CRD gets the training labels (the npz's, in dataset order): every draw is of the other classes
    assert torch.equal(crd.train_labels, torch.from_numpy(np.load(npz_data)["y_train"]))
    assert crd.num_negatives == 50
    draw = crd.sample(torch.arange(8))
    assert bool((crd.train_labels[draw[:, 1:]] != crd.train_labels[:8, None]).all())
    review = c.objective.terms["reviewkd"]
    assert review.student_shapes == [(16, 8, 8), (32, 4, 4), (64, 2, 2)] == review.teacher_shapes
    specs = {t.name: (t.student_taps, t.student_embedding) for t in c.objective.specs}
    assert specs["sp"] == (("stage3",), None) and specs["crd"] == ((), "fc:input")
    assert specs["reviewkd"] == (("stage1", "stage2", "stage3"), "fc:input")
    optimised = {id(p) for g in c.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in c.objective.parameters()} <= optimised
    c.remove_taps()


@pytest.mark.parametrize("terms, names", [
    ("loss.terms={crd: {weight: 0.8}, kd: {weight: 1.0, temperature: 4.0}}", ("crd", "kd")),
    ("loss.terms={kd: {weight: 3.5, temperature: 4.0}, nd: {weight: 2.0}}", ("kd", "nd")),
])
def test_combined_objectives(terms, names, npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    summary = train(load_config(None, base_overrides(npz_data, out, **_teacher(teacher_ckpt)) + [terms]))
    assert summary["finished"] and summary["method"] == "+".join(names)
    for r in _metrics(out):
        for name in ("loss", "ce", *names):
            assert r[f"train/{name}"] is not None and r[f"train/{name}"] == r[f"train/{name}"]


def _crd_overrides(npz, out, teacher) -> list[str]:
    # CRD + KD, 3 epochs of 8 steps with a checkpoint every 3 steps (most land inside an epoch): the banks,
    # the normalisers, the heads and the RNG that draws the negatives must all survive a kill.
    return base_overrides(npz, out, epochs=3, checkpoint_every=3,
                          **{"data.batch_size": 16, **_teacher(teacher),
                             "loss.terms": "{crd: {weight: 0.8, num_negatives: 64}, kd: {}}"})


@pytest.mark.slow
def test_killed_crd_run_resumes_bit_identical_banks_included(npz_data, teacher_ckpt, tmp_path):
    ref = train(load_config(None, _crd_overrides(npz_data, tmp_path / "ref", teacher_ckpt)))
    assert ref["finished"]
    out = tmp_path / "run"
    cmd = train_command(_crd_overrides(npz_data, out, teacher_ckpt))
    proc, killed, err = _run_until(cmd, out, delay=0.0, sig=signal.SIGKILL)
    assert killed and proc.returncode == -signal.SIGKILL, err[-2000:]
    killed_at = load_checkpoint(out / "last.pt")["global_step"]
    assert 0 < killed_at < 24
    done = subprocess.run(cmd + ["resume=auto"], env=subprocess_env(), capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at step {killed_at}" in done.stdout
    _assert_identical(tmp_path / "ref", out, steps=24, keys=("model", "objective"))
    state = load_checkpoint(out / "last.pt")["objective"]
    assert {"terms.crd.memory_student", "terms.crd.memory_teacher", "terms.crd.normalisers"} <= set(state)
