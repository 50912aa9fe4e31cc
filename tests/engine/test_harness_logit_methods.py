"""Tiny end-to-end runs of the newer logit methods (dist, ttm, wttm, abkd) and of loss.standardize=true on
kd / dkd / nkd, through the ordinary method -> loss mapping of the harness."""

from __future__ import annotations

import json

import pytest
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.checkpoint import load_checkpoint
from unikd.engine.step import build_loss_module

RUNS = [
    ("dist", {"loss.temperature": 4.0, "loss.weight": 2.0}),
    ("ttm", {"loss.power": 0.1, "loss.weight": 45.0}),
    ("wttm", {"loss.power": 0.2}),
    ("abkd", {"loss.alpha": 0.8, "loss.beta": 0.3, "loss.weight": 32.0}),
    ("kd", {"loss.standardize": "true", "loss.temperature": 2.0, "loss.weight": 9.0, "loss.ce_weight": 0.1}),
    ("dkd", {"loss.standardize": "true", "loss.temperature": 2.0, "loss.weight": 9.0}),
    ("nkd", {"loss.standardize": "true", "loss.temperature": 3.0, "loss.gamma": 3.5}),
]


def _overrides(method, npz, out, teacher, extra):
    opts = {"method": method, "teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher), **extra}
    return base_overrides(npz, out, **opts)


@pytest.mark.parametrize("method, extra", RUNS, ids=[f"{m}{'+ls' if 'loss.standardize' in e else ''}"
                                                     for m, e in RUNS])
def test_method_trains_end_to_end(method, extra, npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, _overrides(method, npz_data, out, teacher_ckpt, extra))
    params = {k.split(".", 1)[1]: v for k, v in extra.items() if k not in ("loss.weight", "loss.ce_weight")}
    assert {k: cfg.loss.params[k] for k in params} == {
        k: (v == "true" if v in ("true", "false") else v) for k, v in params.items()
    }
    summary = train(cfg)
    assert summary["finished"] and summary["epochs"] == 2 and summary["teacher_model"] == "tiny_cnn"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(f"train/{method}" in r and r[f"train/{method}"] == r[f"train/{method}"] for r in lines)
    assert load_config(out / "config.yaml").loss.params == cfg.loss.params  # the run folder round-trips
    assert "loss_module" in load_checkpoint(out / "last.pt")


def test_standardize_reaches_the_loss_module(npz_data, teacher_ckpt, tmp_path):
    for method in ("kd", "dkd", "nkd"):
        cfg = load_config(None, _overrides(method, npz_data, tmp_path / method, teacher_ckpt,
                                           {"loss.standardize": "true"}))
        assert build_loss_module(cfg, num_classes=4).standardize is True


@pytest.mark.parametrize("key, value, match", [
    ("loss.standardize", "maybe", "loss.standardize must be true or false"),
    ("loss.power", "-1", "power must be a finite number > 0"),
])
def test_bad_loss_values_fail_early(key, value, match, npz_data, teacher_ckpt, tmp_path):
    method = "kd" if key == "loss.standardize" else "ttm"
    with pytest.raises(ValueError, match=match):
        cfg = load_config(None, _overrides(method, npz_data, tmp_path / "x", teacher_ckpt, {key: value}))
        build_loss_module(cfg, num_classes=4)


def test_ctkd_is_not_a_train_method_yet(npz_data, teacher_ckpt, tmp_path):
    with pytest.raises(ValueError, match="method='ctkd' is not valid"):
        load_config(None, _overrides("ctkd", npz_data, tmp_path / "x", teacher_ckpt, {}))
