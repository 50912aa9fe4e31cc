"""Tiny end-to-end runs of the newer logit methods (dist, ttm, wttm, abkd, ctkd, reverse KL, JSD, TAID) and
of loss.standardize=true on kd / dkd / nkd, through the ordinary method -> loss mapping of the harness;
CTKD's learned temperature is trained, checkpointed and resumed exactly; TAID's schedule advances."""

from __future__ import annotations

import json

import pytest
import torch
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.objective.build import plan_terms
from unikd.engine.run.checkpoint import load_checkpoint

RUNS = [
    ("dist", {"loss.temperature": 4.0, "loss.weight": 2.0}),
    ("ttm", {"loss.power": 0.1, "loss.weight": 45.0}),
    ("wttm", {"loss.power": 0.2}),
    ("abkd", {"loss.alpha": 0.8, "loss.beta": 0.3, "loss.weight": 32.0}),
    ("ctkd", {"loss.ce_weight": 0.1, "loss.weight": 0.9, "loss.decay_epochs": 2.0}),
    ("kd", {"loss.standardize": "true", "loss.temperature": 2.0, "loss.weight": 9.0, "loss.ce_weight": 0.1}),
    ("dkd", {"loss.standardize": "true", "loss.temperature": 2.0, "loss.weight": 9.0}),
    ("nkd", {"loss.standardize": "true", "loss.temperature": 3.0, "loss.gamma": 3.5}),
    ("reverse_kl", {"loss.temperature": 2.0}),
    ("jsd", {"loss.beta": 0.3}),
    ("taid", {"loss.t_start": 0.3, "loss.alpha": 0.1}),
]


def _overrides(method, npz, out, teacher, extra):
    opts = {"method": method, "teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher), **extra}
    return base_overrides(npz, out, **opts)


def _hyperparameters(extra):
    out = {k.split(".", 1)[1]: v for k, v in extra.items() if k not in ("loss.weight", "loss.ce_weight")}
    return {k: (v == "true" if v in ("true", "false") else v) for k, v in out.items()}


@pytest.mark.parametrize("method, extra", RUNS, ids=[f"{m}{'+ls' if 'loss.standardize' in e else ''}"
                                                     for m, e in RUNS])
def test_method_trains_end_to_end(method, extra, npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, _overrides(method, npz_data, out, teacher_ckpt, extra))
    (plan,) = plan_terms(cfg)
    assert plan.needs_teacher and plan.config.params == _hyperparameters(extra)
    assert plan.cls(**plan.config.params) is not None  # the hyperparameters reach the module
    summary = train(cfg)
    assert summary["finished"] and summary["epochs"] == 2 and summary["teacher_model"] == "tiny_cnn"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(f"train/{method}" in r and r[f"train/{method}"] == r[f"train/{method}"] for r in lines)
    assert load_config(out / "config.yaml").terms == cfg.terms  # the run folder round-trips


def test_taid_schedule_advances_with_the_run(npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, _overrides("taid", npz_data, out, teacher_ckpt, {"loss.t_start": 0.3})))
    state = load_checkpoint(out / "last.pt")["objective"]
    (key,) = [k for k in state if k.endswith("schedule.t")]
    # 8 steps over 2 epochs: progress reaches 1, so t is at least the linear ramp's end value
    assert state[key].item() == pytest.approx(1.0)


def test_standardize_reaches_the_loss_module(npz_data, teacher_ckpt, tmp_path):
    for method in ("kd", "dkd", "nkd", "ctkd"):
        cfg = load_config(None, _overrides(method, npz_data, tmp_path / method, teacher_ckpt,
                                           {"loss.standardize": "true"}))
        (plan,) = plan_terms(cfg)
        assert plan.cls(**plan.config.params).standardize is True


@pytest.mark.parametrize("key, value, match", [
    ("loss.standardize", "maybe", "loss.standardize must be true or false"),
    ("loss.power", "-1", "power must be a finite number > 0"),
])
def test_bad_loss_values_fail_early(key, value, match, npz_data, teacher_ckpt, tmp_path):
    method = "kd" if key == "loss.standardize" else "ttm"
    with pytest.raises(ValueError, match=match):
        cfg = load_config(None, _overrides(method, npz_data, tmp_path / "x", teacher_ckpt, {key: value}))
        (plan,) = plan_terms(cfg)
        plan.cls(**plan.config.params)


def test_ctkd_learns_its_temperature_and_resumes_exactly(npz_data, teacher_ckpt, tmp_path):
    extra = {"loss.ce_weight": 0.1, "loss.weight": 0.9, "loss.decay_epochs": 2.0, "epochs": 3,
             "sched.milestones": "[2]"}
    full = tmp_path / "full"
    train(load_config(None, _overrides("ctkd", npz_data, full, teacher_ckpt, extra)))
    ckpt_full = load_checkpoint(full / "last.pt")
    g_full = ckpt_full["objective"]["terms.ctkd.temperature.global_t"]
    assert g_full.shape == (1,) and float(g_full) != 1.0  # optimised from its initial 1.0
    # the temperature is one of the optimizer's parameters: its momentum buffer (the only (1,)-shaped one
    # of this tiny model) is in the checkpoint
    state = ckpt_full["optimizer"]["state"]
    assert any(tuple(v["momentum_buffer"].shape) == (1,) for v in state.values())

    part = tmp_path / "part"
    train(load_config(None, _overrides("ctkd", npz_data, part, teacher_ckpt, {**extra, "epochs": 2})))
    resumed = load_config(None, _overrides("ctkd", npz_data, part, teacher_ckpt, {**extra, "resume": "auto"}))
    train(resumed)
    ckpt = load_checkpoint(part / "last.pt")
    assert torch.equal(ckpt["objective"]["terms.ctkd.temperature.global_t"], g_full)
    full_model = load_checkpoint(full / "last.pt")["model"]
    assert all(torch.equal(ckpt["model"][k], full_model[k]) for k in full_model)
