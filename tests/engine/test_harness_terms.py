"""The objective as named terms through the real harness: a combined objective end to end, the teacher run
once per step, every input of the term interface supplied, term modules in the optimizer and the
checkpoint, and the teacher source chosen by what the terms read."""

from __future__ import annotations

import json
import logging

import pytest
import term_probe
import torch
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.loop.setup import build
from unikd.engine.loop.trainer import Trainer
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
COMBINED = "loss.terms={nkd: {temperature: 1.0}, fitnet: {weight: 10}, at: {weight: 100, warmup_epochs: 1}}"


def _teacher(ckpt) -> dict[str, str]:
    return {"teacher.model": "tiny_cnn", "teacher.checkpoint": str(ckpt)}


@pytest.fixture
def probe():
    term_probe.register()
    yield
    term_probe.unregister()


def test_combined_objective_trains_logs_each_term_and_round_trips(npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, base_overrides(npz_data, out, **_teacher(teacher_ckpt)) + [COMBINED])
    summary = train(cfg)
    assert summary["finished"] and summary["method"] == "nkd+fitnet+at"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in lines:
        for term in ("loss", "ce", "nkd", "fitnet", "at"):
            assert r[f"train/{term}"] == r[f"train/{term}"] and r[f"train/{term}"] is not None
    # the saved config is the same config, in the canonical mapping form
    assert load_config(out / "config.yaml") == cfg
    ckpt = load_checkpoint(out / "last.pt")
    regressor = {k: v for k, v in ckpt["objective"].items() if k.startswith("terms.fitnet.regressor.")}
    assert {"terms.fitnet.regressor.conv.weight", "terms.fitnet.regressor.bn.running_mean"} <= set(regressor)
    assert ckpt["method"] == "nkd+fitnet+at"


def test_teacher_and_student_run_once_per_step_for_all_terms(npz_data, teacher_ckpt, tmp_path, caplog):
    cfg = load_config(None, base_overrides(npz_data, tmp_path, **_teacher(teacher_ckpt)) + [COMBINED])
    with caplog.at_level(logging.INFO, logger="unikd"):
        c = build(cfg, CPU)
    assert "teacher source  live model (term(s) fitnet, at read the teacher's features)" in caplog.text
    assert "10 x FitNetLoss; reads student stage2 32x4x4, teacher stage2 32x4x4" in caplog.text
    calls = {"teacher": 0, "student": 0}
    c.teacher.model.register_forward_pre_hook(lambda *a: calls.__setitem__("teacher", calls["teacher"] + 1))
    c.model.register_forward_pre_hook(lambda *a: calls.__setitem__("student", calls["student"] + 1))
    trainer = Trainer(c)
    c.train_loader.set_epoch(0)
    regressor = c.objective.terms["fitnet"].regressor
    before = regressor.conv.weight.detach().clone()
    for i, batch in zip(range(3), c.train_loader):
        values, _ = trainer.step(batch, 0, i, len(c.train_loader))
        # loss, ce, the three terms, and NKD's monitor value nkd_kl
        assert c.term_names() == ["loss", "ce", "nkd", "fitnet", "at", "nkd_kl"]
        assert values.shape == (6,) and torch.isfinite(values).all()
    assert calls == {"teacher": 3, "student": 3}
    optimised = {id(p) for g in c.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in regressor.parameters()} <= optimised
    assert not torch.equal(before, regressor.conv.weight)  # the connector is trained
    # one hook per distinct tap: stage2 is read by fitnet and at, on each network
    assert c.student_taps.specs == ["stage1", "stage2", "stage3"] == c.teacher_taps.specs
    c.remove_taps()


def test_every_input_and_context_argument_is_supplied(npz_data, teacher_ckpt, tmp_path, probe):
    cfg = load_config(None, base_overrides(npz_data, tmp_path, **_teacher(teacher_ckpt))
                      + ["loss.terms={kd: {}, probe: {momentum: 0.25}}"])
    c = build(cfg, CPU)
    module = c.objective.terms["probe"]
    assert module.context == {"num_classes": 4, "num_samples": 128, "student_shapes": [(32, 4, 4)],
                              "teacher_shapes": [(32, 4, 4)], "in_features": 64, "teacher_in_features": 64,
                              "total_epochs": 2}
    assert c.student_taps.specs == ["fc:input", "stage2"]  # the embedding is the classifier's input
    summary = Trainer(c).fit()
    assert summary["finished"] and module.calls == 8 and module.momentum == 0.25
    # every training row went through the bank once per epoch, by its dataset index
    assert torch.equal(module.seen, torch.full((128,), 2))
    assert load_checkpoint(tmp_path / "last.pt")["objective"]["terms.probe.seen"].sum() == 256


def test_taps_config_overrides_the_family_default(npz_data, teacher_ckpt, tmp_path):
    opts = ["method=fitnet", "loss.weight=10", "taps.student.hint=stage1", "taps.teacher={hint: stage2}"]
    c = build(load_config(None, base_overrides(npz_data, tmp_path, **_teacher(teacher_ckpt)) + opts), CPU)
    assert c.student_taps.specs == ["stage1"] and c.teacher_taps.specs == ["stage2"]
    conv = c.objective.terms["fitnet"].regressor.conv  # 16x8x8 -> 32x4x4: 3x3 stride 2, as the benchmark
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (16, 32, (3, 3), (2, 2))
    c.remove_taps()


def test_unsupported_hint_sizes_and_missing_taps_fail_before_training(npz_data, teacher_ckpt, tmp_path):
    base = base_overrides(npz_data, tmp_path, **_teacher(teacher_ckpt))
    with pytest.raises(ValueError, match="no hint regressor maps a student map of 2x2 to a teacher map"):
        opts = ["method=fitnet", "taps.student.hint=stage3", "taps.teacher.hint=stage1"]
        build(load_config(None, base + opts), CPU)
    with pytest.raises(ValueError, match="has no submodule 'stage9'"):
        build(load_config(None, base + ["method=at", "taps.teacher.stages=[stage1, stage9]"]), CPU)


def test_feature_terms_use_the_live_teacher_even_with_a_cache(npz_data, teacher_ckpt, tmp_path, caplog):
    cached = {"teacher.cache": str(tmp_path / "no-cache-needed")}
    cfg = load_config(None, base_overrides(npz_data, tmp_path, **_teacher(teacher_ckpt), **cached)
                      + ["loss.terms={kd: {}, at: {weight: 10}}"])
    with caplog.at_level(logging.INFO, logger="unikd"):
        c = build(cfg, CPU)
    assert "live model (term(s) at read the teacher's features; the cache" in caplog.text
    assert "holds logits only)" in caplog.text
    c.remove_taps()
    only_cache = load_config(None, base_overrides(npz_data, tmp_path, **cached) + ["method=at"])
    with pytest.raises(ValueError, match="teacher.cache does not hold.*set teacher.model=<name>"):
        build(only_cache, CPU)


def test_checkpoints_from_before_the_terms_form_resume_their_single_loss_module(npz_data, tmp_path):
    from unikd.engine.loop.resume import _restore_objective

    c = build(load_config(None, base_overrides(npz_data, tmp_path, method="uskd")), CPU)
    head = c.objective.terms["uskd"].head
    old = {"head.weight": torch.ones_like(head.weight), "head.bias": torch.zeros_like(head.bias)}
    legacy = {"loss_module": old}
    _restore_objective(c.objective, legacy, tmp_path / "old.pt")
    assert torch.equal(head.weight, torch.ones_like(head.weight))
    with pytest.raises(ValueError, match="state of its loss terms does not fit"):
        _restore_objective(c.objective, {"objective": {"terms.fitnet.regressor.conv.weight": head.weight}},
                           tmp_path / "old.pt")
    c.remove_taps()
