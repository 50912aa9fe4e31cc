"""Extended-KD (KD + the extended_kd term) through the real harness: a two-epoch run, the connectors in the
optimizer, trained and restored from the checkpoint, the segment taps and their overrides."""

from __future__ import annotations

import json

import pytest
import torch
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.loop.setup import build
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
# a half-width student (8/16/32 channels) under the 16/32/64 teacher: every segment needs a connector
TERMS = "loss.terms={kd: {weight: 1.0, temperature: 4.0}, extended_kd: {weight: 10.0, weights: [1, 1, 2]}}"


def _opts(npz, out, teacher, *extra):
    return base_overrides(npz, out, **{"teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher),
                                       "model_args": "{width: 8}"}) + [TERMS, *extra]


def test_kd_plus_extended_kd_trains_and_checkpoints_its_connectors(npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    summary = train(load_config(None, _opts(npz_data, out, teacher_ckpt)))
    assert summary["finished"] and summary["method"] == "kd+extended_kd"
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert all(rec[f"train/{t}"] is not None and rec[f"train/{t}"] > 0 for t in ("kd", "extended_kd"))
    ckpt = load_checkpoint(out / "last.pt")
    saved = {k: v for k, v in ckpt["objective"].items() if k.startswith("terms.extended_kd.")}
    for k in range(3):
        assert {f"terms.extended_kd.connectors.{k}.proj.0.weight",
                f"terms.extended_kd.connectors.{k}.proj.1.running_var"} <= set(saved)
    # restored exactly when the run is resumed from that checkpoint
    c = build(load_config(None, _opts(npz_data, out, teacher_ckpt, f"resume={out / 'last.pt'}")), CPU)
    state = c.objective.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    c.remove_taps()


def test_connectors_are_optimised_and_the_preflight_names_the_segments(npz_data, teacher_ckpt, tmp_path,
                                                                       caplog):
    with caplog.at_level("INFO", logger="unikd"):
        c = build(load_config(None, _opts(npz_data, tmp_path, teacher_ckpt)), CPU)
    assert "10 x ExtendedKDLoss; reads student stage1 8x8x8, student stage2 16x4x4" in caplog.text
    assert "teacher stage3 64x2x2" in caplog.text
    term = c.objective.terms["extended_kd"]
    assert term.weights == [1.0, 1.0, 2.0]
    params = [p for conn in term.connectors for p in conn.parameters()]
    optimised = {id(p) for g in c.optimizer.param_groups for p in g["params"]}
    assert len(params) == 9 and {id(p) for p in params} <= optimised
    before = [p.detach().clone() for p in params]
    c.train_loader.set_epoch(0)
    from unikd.engine.loop.trainer import Trainer

    trainer = Trainer(c)
    for i, batch in zip(range(2), c.train_loader):
        trainer.step(batch, 0, i, len(c.train_loader))
    assert all(not torch.equal(a, p) for a, p in zip(before, params))
    c.remove_taps()


def test_segment_taps_override_the_stages(npz_data, teacher_ckpt, tmp_path):
    opts = ["taps.student.segments=[stage1, stage3]", "taps.teacher.segments=[stage2, stage3]",
            "loss.terms.extended_kd.weights=null"]
    c = build(load_config(None, _opts(npz_data, tmp_path, teacher_ckpt, *opts)), CPU)
    first, second = c.objective.terms["extended_kd"].connectors
    assert (first.in_shape, first.out_shape) == ((8, 8, 8), (32, 4, 4))  # pooled to 4x4, 8 -> 32 channels
    assert (second.in_shape, second.out_shape) == ((32, 2, 2), (64, 2, 2))
    assert c.student_taps.specs == ["stage1", "stage3"] and c.teacher_taps.specs == ["stage2", "stage3"]
    c.remove_taps()
    with pytest.raises(ValueError, match="student has 2 segment outputs and the teacher 3"):
        build(load_config(None, _opts(npz_data, tmp_path, teacher_ckpt, opts[0])), CPU)
