"""End-to-end tiny runs of every method, the run-folder contract, the teacher's isolation, precision."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.loop.setup import build
from unikd.engine.objective.objective import Objective, Term
from unikd.engine.run.checkpoint import load_checkpoint, load_safetensors
from unikd.engine.run.distributed import DistInfo

METHODS = ["ce", "ls", "kd", "dkd", "nkd", "uskd", "tfkd", "zipf", "fitnet", "at"]
TEACHER_METHODS = ("kd", "dkd", "nkd", "fitnet", "at")
SUMMARY_KEYS = {"best_top1", "best_epoch", "last_top1", "last_top5", "last_nll", "last_ece", "epochs",
                "wall_seconds", "seconds_per_epoch", "method", "model", "teacher_model", "seed", "finished"}


def _overrides(method: str, npz: Path, out: Path, teacher: Path, **extra: object) -> list[str]:
    opts: dict[str, object] = {"method": method, **extra}
    if method in TEACHER_METHODS:
        opts.update({"teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher)})
    return base_overrides(npz, out, **opts)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_writes_the_run_folder(method, npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    summary = train(load_config(None, _overrides(method, npz_data, out, teacher_ckpt)))

    assert set(summary) == SUMMARY_KEYS
    assert summary["finished"] and summary["epochs"] == 2 and summary["method"] == method
    assert summary["teacher_model"] == ("tiny_cnn" if method in TEACHER_METHODS else None)
    assert json.loads((out / "summary.json").read_text()) == pytest.approx(summary)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    terms = {"train/loss", "train/ce"} | ({f"train/{method}"} if method not in ("ce", "ls") else set())
    if method in ("nkd", "uskd"):
        terms.add(f"train/{method}_kl")  # the non-target term in KL form, logged beside the loss
    expected = {"epoch", "lr", "train/top1", "val/top1", "val/top5", "val/nll", "val/ece", "images_per_s",
                "epoch_seconds"}
    assert set(lines[0]) == expected | terms
    for r in lines:
        assert all(v is not None and v == v for v in r.values())  # no NaN / missing values
    assert lines[0]["lr"] == pytest.approx(0.05) and lines[1]["lr"] == pytest.approx(0.005)
    assert load_config(out / "config.yaml").method == method

    ckpt = load_checkpoint(out / "last.pt")  # weights_only=True
    assert ckpt["model_name"] == "tiny_cnn" and ckpt["num_classes"] == 4 and ckpt["epoch"] == 2
    # the term modules' state (weak head, regressor) travels in "objective", keyed by term name
    assert all(k.startswith(f"terms.{method}.") for k in ckpt["objective"])
    assert bool(ckpt["objective"]) == (method in ("uskd", "fitnet"))
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    exported = load_safetensors(out / "student.safetensors")
    assert exported.keys() == best["model"].keys()
    assert all(torch.equal(exported[k], best["model"][k]) for k in exported)
    if method == "uskd":
        # the weak head is trained with the student and saved with it
        head = [v for k, v in ckpt["objective"].items() if k.endswith("weight")]
        assert head and head[0].shape[0] == 4


def test_objective_weights_terms_and_ramps_each_term():
    class Fake(torch.nn.Module):
        requires = ("teacher_logits", "target")

        def forward(self, student_logits, teacher_logits, target):
            return (student_logits - teacher_logits).pow(2).mean()

    logits, teacher = torch.randn(6, 4), torch.randn(6, 4)
    target = torch.randint(0, 4, (6,))
    terms = Objective([], ce_weight=0.5, smoothing=0.3)(logits, target)
    assert set(terms) == {"loss", "ce"}
    assert torch.allclose(terms["ce"], F.cross_entropy(logits, target, label_smoothing=0.3))
    assert torch.allclose(terms["loss"], 0.5 * terms["ce"])

    obj = Objective([Term("kd", Fake(), weight=2.0, warmup_epochs=4), Term("b", Fake(), weight=0.5)])
    assert obj.term_names() == ["loss", "ce", "kd", "b"]
    for progress, factor in [(1.0, 0.25), (2.0, 0.5), (9.0, 1.0)]:
        t = obj(logits, target, teacher_logits=teacher, epoch_progress=progress)
        assert set(t) == {"loss", "ce", "kd", "b"}
        mse = (logits - teacher).pow(2).mean()
        assert torch.allclose(t["ce"], F.cross_entropy(logits, target))
        assert torch.allclose(t["loss"], t["ce"] + 2 * factor * mse + 0.5 * mse)


def test_teacher_is_frozen_outside_optimizer_and_checked(npz_data, teacher_ckpt, tmp_path, caplog):
    cfg = load_config(None, _overrides("nkd", npz_data, tmp_path, teacher_ckpt, **{"loss.gamma": 2}))
    with caplog.at_level(logging.INFO, logger="unikd"):
        c = build(cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    teacher = c.teacher.model
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    optimised = {id(p) for g in c.optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    assert {id(p) for p in c.model.parameters()} <= optimised
    table = caplog.text
    assert "preflight" in table and "val top-1" in table and "teacher: same" in table
    assert "32 global = 32 x 1 rank(s)" in table and "4/epoch x 2 epochs = 8" in table
    # The teacher's logits do not carry gradients.
    batch = next(iter(c.train_loader))
    assert not c.teacher(batch.images, 0, batch.index).requires_grad


def test_uskd_weak_head_is_optimised_with_the_student(npz_data, tmp_path):
    cfg = load_config(None, base_overrides(npz_data, tmp_path, method="uskd", feature="stage2"))
    c = build(cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    optimised = {id(p) for g in c.optimizer.param_groups for p in g["params"]}
    head = list(c.objective.terms["uskd"].parameters())
    assert head and {id(p) for p in head} <= optimised
    assert c.student_taps.specs == ["stage2"] and len(c.teacher_taps) == 0
    assert head[0].shape[1] == 32  # tiny_cnn's stage2 has 2 * 16 channels: in_features measured, not guessed


def test_bf16_autocast_on_cpu_ema_adamw_and_clipping(npz_data, tmp_path):
    opts = {"precision": "bf16", "ema_decay": 0.5, "optim.name": "adamw", "optim.lr": 1e-3,
            "optim.clip_grad_norm": 0.5, "sched.name": "cosine", "sched.warmup_epochs": 0.5}
    summary = train(load_config(None, base_overrides(npz_data, tmp_path, epochs=1, **opts)))
    assert summary["finished"]
    assert load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    # "model" holds the evaluated EMA weights; the raw weights are kept for resuming.
    assert "ema" in ckpt and "train_model" in ckpt
    assert any(not torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in ckpt["model"]
               if ckpt["model"][k].is_floating_point())


def test_fp16_needs_cuda(npz_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    with pytest.raises(ValueError, match="precision=fp16 needs a CUDA device"):
        train(load_config(None, base_overrides(npz_data, tmp_path, precision="fp16")))


def test_grayscale_teacher_and_student(tmp_path):
    # The input channel count travels with the checkpoint, so a 1-channel teacher loads for distillation.
    from harness_support import make_npz

    gray = make_npz(tmp_path / "gray.npz", channels=1, per_class=8)
    train(load_config(None, base_overrides(gray, tmp_path / "t", epochs=1)))
    teacher = {"teacher.model": "tiny_cnn", "teacher.checkpoint": str(tmp_path / "t" / "best.pt")}
    summary = train(load_config(None, base_overrides(gray, tmp_path / "s", epochs=1, method="kd", **teacher)))
    assert summary["finished"] and load_checkpoint(tmp_path / "s" / "best.pt")["in_chans"] == 1


def test_eval_every_and_tensorboard_switch(npz_data, tmp_path):
    summary = train(load_config(None, base_overrides(npz_data, tmp_path / "a", eval_every=2, epochs=2)))
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["val/top1"] is None and lines[1]["val/top1"] == summary["last_top1"]
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorboard=true but TensorBoard is not installed"):
            train(load_config(None, base_overrides(npz_data, tmp_path / "b", tensorboard="true")))
    else:
        train(load_config(None, base_overrides(npz_data, tmp_path / "b", epochs=1, tensorboard="true")))
        assert any((tmp_path / "b" / "tb").iterdir())
