"""Per-term gradient diagnostics: the logged norms and cosines equal a direct computation, training with them
is bit-identical to training without, the last shared layer is found from what the terms reach, and a
sustained imbalance warns with the weight to change."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.loop.setup import build
from unikd.engine.loop.trainer import Trainer
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import DistInfo
from unikd.losses import tfkd_loss

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
TERMS = "loss.terms={tfkd: {weight: 0.5}, zipf: {weight: 0.2}}"


def _records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_with_diagnostics_is_bit_identical_and_logs_every_term(npz_data, tmp_path):
    off = train(load_config(None, base_overrides(npz_data, tmp_path / "off") + [TERMS]))
    on_cfg = base_overrides(npz_data, tmp_path / "on", **{"diagnostics.every": 1}) + [TERMS]
    on = train(load_config(None, on_cfg))
    assert off["finished"] and on["finished"]
    a, b = load_checkpoint(tmp_path / "off" / "last.pt"), load_checkpoint(tmp_path / "on" / "last.pt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert "diagnostics" not in a and b["diagnostics"]["layer"] == "fc"
    diag_keys = set()
    for r_off, r_on in zip(_records(tmp_path / "off"), _records(tmp_path / "on")):
        extra = set(r_on) - set(r_off)
        diag_keys |= extra
        timing = ("epoch_seconds", "images_per_s")
        assert {k: v for k, v in r_on.items() if k not in extra and k not in timing} == \
            {k: v for k, v in r_off.items() if k not in timing}
        for key in extra:
            assert r_on[key] is not None and r_on[key] == r_on[key], key
    expected = {f"train/{n}/{f}" for n in ("ce", "tfkd", "zipf") for f in ("grad_logits", "grad_layer")}
    expected |= {f"train/{n}/{f}" for n in ("tfkd", "zipf") for f in ("cos_logits", "cos_layer")}
    assert diag_keys == expected


def test_measurement_equals_a_direct_computation(npz_data, tmp_path):
    cfg = load_config(None, base_overrides(npz_data, tmp_path, method="tfkd", **{
        "diagnostics.every": 1, "loss.weight": 0.7, "loss.ce_weight": 0.9}))
    c = build(cfg, CPU)
    c.train_loader.set_epoch(0)
    batch = next(iter(c.train_loader))
    ref = copy.deepcopy(c.model).train()
    Trainer(c).step(batch, 0, 0, len(c.train_loader))
    logits = ref(batch.images)
    tf = c.objective.terms["tfkd"]
    parts = {"ce": 0.9 * F.cross_entropy(logits, batch.target),
             "tfkd": 0.7 * tfkd_loss(logits, batch.target, correct_prob=tf.correct_prob,
                                     temperature=tf.temperature)}
    grads = {}
    for name, value in parts.items():
        g = torch.autograd.grad(value, [logits, ref.fc.weight, ref.fc.bias], retain_graph=True)
        grads[name] = (g[0].flatten(), torch.cat([g[1].flatten(), g[2].flatten()]))
    row = c.diagnostics.epoch_record()
    for name in ("ce", "tfkd"):
        assert row[f"train/{name}/grad_logits"] == pytest.approx(grads[name][0].norm().item(), rel=1e-5)
        assert row[f"train/{name}/grad_layer"] == pytest.approx(grads[name][1].norm().item(), rel=1e-5)
    for i, field in enumerate(("cos_logits", "cos_layer")):
        cos = F.cosine_similarity(grads["tfkd"][i], grads["ce"][i], dim=0).item()
        assert row[f"train/tfkd/{field}"] == pytest.approx(cos, rel=1e-4, abs=1e-6)


def test_last_shared_layer_of_a_feature_term_and_the_override(npz_data, teacher_ckpt, tmp_path):
    teacher = {"teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher_ckpt), "diagnostics.every": 1}
    cfg = load_config(None, base_overrides(npz_data, tmp_path, **teacher)
                      + ["loss.terms={kd: {weight: 1}, fitnet: {weight: 10}}"])
    c = build(cfg, CPU)
    c.train_loader.set_epoch(0)
    Trainer(c).step(next(iter(c.train_loader)), 0, 0, 4)
    # FitNet's gradient reaches the student only up to its hint (stage2): the last layer shared with CE and
    # KD is stage2's BatchNorm (stage2 = conv, BN, ReLU)
    assert c.diagnostics.layer == "stage2.1"
    row = c.diagnostics.epoch_record()
    assert row["train/fitnet/grad_logits"] == 0.0 and row["train/fitnet/grad_layer"] > 0
    cfg = load_config(None, base_overrides(npz_data, tmp_path, **teacher, **{"diagnostics.layer": "stage1.0"})
                      + ["loss.terms={kd: {weight: 1}}"])
    assert build(cfg, CPU).diagnostics.layer == "stage1.0"
    with pytest.raises(ValueError, match="diagnostics.layer='stage9' is not a module of tiny_cnn"):
        build(load_config(None, base_overrides(npz_data, tmp_path, **{"diagnostics.every": 1,
                                                                      "diagnostics.layer": "stage9"})), CPU)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"method": "tfkd", "loss.weight": 3000.0}, "lower loss.weight (now 3000"),
        ({"method": "tfkd", "loss.weight": 1e-4}, "raise loss.weight (now 0.0001"),
    ],
)
def test_sustained_imbalance_warns_with_the_weight_to_change(npz_data, tmp_path, caplog, overrides, expected):
    opts = {**overrides, "diagnostics.every": 1, "diagnostics.patience": 3, "epochs": 1}
    with caplog.at_level(logging.WARNING, logger="unikd"):
        train(load_config(None, base_overrides(npz_data, tmp_path, **opts)))
    warnings = [r.message for r in caplog.records if "diagnostics:" in r.message]
    assert len(warnings) == 1, warnings  # once, after 3 measurements in a row
    assert "term 'tfkd'" in warnings[0] and expected in warnings[0]
    assert "for 3 measurements in a row" in warnings[0] and "up to step 3" in warnings[0]


def test_terms_form_names_the_term_weight_and_ramping_terms_are_not_judged(npz_data, tmp_path, caplog):
    opts = {"diagnostics.every": 1, "diagnostics.patience": 2, "epochs": 1}
    terms = "loss.terms={tfkd: {weight: 5000}, zipf: {weight: 5000, warmup_epochs: 100}}"
    with caplog.at_level(logging.WARNING, logger="unikd"):
        train(load_config(None, base_overrides(npz_data, tmp_path, **opts) + [terms]))
    text = "\n".join(r.message for r in caplog.records)
    assert "lower loss.terms.tfkd.weight (now 5000" in text
    assert "term 'zipf'" not in text


@pytest.mark.parametrize("key, value", [("diagnostics.every", -1), ("diagnostics.ratio", 1),
                                        ("diagnostics.patience", 0)])
def test_bad_values(key, value, tmp_path):
    with pytest.raises(ValueError, match=key):
        load_config(None, [f"{key}={value}"])
    with pytest.raises(ValueError, match="Did you mean 'diagnostics.every'"):
        load_config(None, ["diagnostics.evry=1"])
