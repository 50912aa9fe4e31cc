"""Monitor values of loss terms (NKD's and USKD's non-target terms in KL form): logged, never optimised."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.objective.objective import Objective, Term
from unikd.losses import NKDLoss, USKDLoss, nkd_nontarget_kl, standardize_logits, uskd_nontarget_kl


def _inputs(seed: int = 0, n: int = 8, c: int = 10):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=g) * 3).requires_grad_(True)
    teacher = torch.randn(n, c, generator=g) * 3
    target = torch.randint(0, c, (n,), generator=g)
    return logits, teacher, target


@pytest.mark.parametrize("standardize", [False, True])
def test_nkd_term_logs_its_kl_form_beside_the_loss(standardize):
    logits, teacher, target = _inputs()
    module = NKDLoss(temperature=3.0, gamma=3.5, standardize=standardize)
    obj = Objective([Term("nkd", module, weight=0.5)])
    assert obj.term_names() == ["loss", "ce", "nkd", "nkd_kl"]
    out = obj(logits, target, teacher_logits=teacher)
    zs, zt = (standardize_logits(logits), standardize_logits(teacher)) if standardize else (logits, teacher)
    want = nkd_nontarget_kl(zs, zt, target, temperature=3.0, gamma=3.5)
    torch.testing.assert_close(out["nkd_kl"], want)
    assert not out["nkd_kl"].requires_grad and out["nkd_kl"].item() > 0
    # the monitor never enters the optimised total
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, target) + 0.5 * out["nkd"])
    # the logged loss minus its KL form is the part the student cannot lower plus the target term: >= 0
    assert out["nkd"].item() - out["nkd_kl"].item() >= 0


def test_nkd_kl_is_zero_when_the_student_matches_the_teacher():
    logits, _, target = _inputs(1)
    out = Objective([Term("nkd", NKDLoss())])(logits, target, teacher_logits=logits.detach())
    assert out["nkd_kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["nkd"].item() > 0  # the cross-entropy form keeps the teacher's entropy


def test_online_monitor_is_averaged_over_the_other_networks():
    logits, a, target = _inputs(2)
    _, b, _ = _inputs(3)
    obj = Objective([Term("nkd", NKDLoss(gamma=1.0))])
    out = obj(logits, target, teacher_logits=[a, b])
    want = sum(nkd_nontarget_kl(logits, t, target, gamma=1.0) for t in (a, b)) / 2
    torch.testing.assert_close(out["nkd_kl"], want)


def test_uskd_monitor_uses_the_weak_head():
    torch.manual_seed(0)
    logits, _, target = _inputs(4)
    emb = torch.randn(logits.shape[0], 6)
    module = USKDLoss(in_features=6, num_classes=logits.shape[1], beta=0.1)
    got = module.monitor(logits, emb, target)
    want = uskd_nontarget_kl(logits, module.head(emb), target, beta=0.1, rank=module.rank)
    torch.testing.assert_close(got["kl"], want)
    assert not got["kl"].requires_grad


def test_a_term_named_like_a_monitor_is_refused():
    with pytest.raises(ValueError, match="clash with the logged monitor values"):
        Objective([Term("nkd", NKDLoss()), Term("nkd_kl", NKDLoss())])


def test_training_logs_the_kl_form(npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    opts = {"method": "nkd", "teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher_ckpt)}
    train(load_config(None, base_overrides(npz_data, out, **opts)))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["train/nkd_kl"] >= 0 and r["train/nkd"] >= r["train/nkd_kl"] for r in rows)


def test_monitors_can_be_switched_off():
    logits, teacher, target = _inputs()
    on = Objective([Term("nkd", NKDLoss())])(logits, target, teacher_logits=teacher)
    off_obj = Objective([Term("nkd", NKDLoss())], monitors=False)
    off = off_obj(logits, target, teacher_logits=teacher)
    assert "nkd_kl" in on and "nkd_kl" not in off and "nkd_kl" not in off_obj.term_names()
    torch.testing.assert_close(off["loss"], on["loss"])


def test_training_without_monitors(npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    opts = {"method": "nkd", "teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher_ckpt),
            "diagnostics.monitors": "false"}
    train(load_config(None, base_overrides(npz_data, out, **opts)))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("train/nkd" in r and "train/nkd_kl" not in r for r in rows)
