"""The instance selection in the objective (``selection``, engine/objective/selection.py): every term and
the CE see the selected rows only (their logits, targets, teacher logits, taps, images, indices), terms
reading ``sample_weights`` get the selected rows' weights, a step without selected rows is 0 with a gradient,
and non-finite logits still give a NaN loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unikd.engine.objective.objective import Objective, Term
from unikd.engine.objective.selection import InstanceSelection, build_selection
from unikd.losses import KDLoss, kd3_select_weights, kd_loss


class _Seen(nn.Module):
    """Records what it is handed (rows, weights, images, indices) and returns the mean of its logits."""

    requires = ("sample_weights", "images", "indices", "student_features")
    taps = "hint"

    def forward(self, student_logits: Tensor, sample_weights: Tensor, images: Tensor, indices: Tensor,
                student_features: list[Tensor]) -> Tensor:
        self.seen = (student_logits.detach(), sample_weights, images, indices, student_features[0])
        return student_logits.mean()


def _batch(seed=0, n=8, c=4):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, c, generator=g)).requires_grad_(True)
    teacher = 3 * torch.randn(n, c, generator=g)
    return logits, teacher, torch.randint(0, c, (n,), generator=g)


def _objective(selection, weights="mask"):
    terms = [Term("kd", KDLoss(temperature=2.0)), Term("seen", _Seen(), student_taps=("h",))]
    sel = InstanceSelection(selection, 1.0, 0.5, 4.0, weights) if selection is not None else None
    return Objective(terms, ce_weight=0.5, selection=sel)


def test_the_objective_sees_the_selected_rows_only():
    logits, teacher, target = _batch()
    images, taps, idx = torch.randn(8, 1, 2, 2), {"h": torch.randn(8, 3)}, torch.arange(10, 18)
    obj = _objective(0.6, weights="confidence")
    out = obj(logits, target, teacher_logits=teacher, student_taps=taps, indices=idx, epoch_progress=2.0,
              images=images)
    w = kd3_select_weights(logits, teacher, teacher_share=0.75, threshold=0.6, weights="confidence")
    keep = w > 0
    assert 0 < int(keep.sum()) < 8, "the fixture must select some rows, not all"
    assert out["selected"].item() == pytest.approx(keep.float().mean().item())
    assert out["kd"].item() == pytest.approx(kd_loss(logits[keep], teacher[keep], temperature=2.0).item())
    assert out["ce"].item() == pytest.approx(F.cross_entropy(logits[keep], target[keep]).item())
    seen = obj.terms["seen"].seen
    assert torch.equal(seen[0], logits[keep].detach()) and torch.equal(seen[1], w[keep])
    assert torch.equal(seen[2], images[keep]) and torch.equal(seen[3], idx[keep])
    assert torch.equal(seen[4], taps["h"][keep])
    assert obj.term_names() == ["loss", "ce", "kd", "seen", "selected"]
    out["loss"].backward()
    assert bool((logits.grad[~keep] == 0).all()) and bool((logits.grad[keep] != 0).any())


def test_without_selection_weights_are_one_and_rows_all():
    logits, teacher, target = _batch()
    obj = _objective(None)
    out = obj(logits, target, teacher_logits=teacher, student_taps={"h": torch.randn(8, 3)},
              indices=torch.arange(8), images=torch.randn(8, 1, 2, 2))
    assert "selected" not in out and torch.equal(obj.terms["seen"].seen[1], torch.ones(8))
    assert out["kd"].item() == pytest.approx(kd_loss(logits, teacher, temperature=2.0).item())


def test_a_step_without_selected_rows_is_zero_with_a_gradient():
    logits, teacher, target = _batch()
    obj = _objective(1.0)  # no row reaches a combined probability of exactly 1
    out = obj(logits, target, teacher_logits=teacher, student_taps={"h": torch.randn(8, 3)},
              indices=torch.arange(8), images=torch.randn(8, 1, 2, 2))
    assert set(out) == set(obj.term_names()) and all(v.item() == 0.0 for v in out.values())
    out["loss"].backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_non_finite_logits_keep_their_rows_so_the_loss_is_nan():
    logits, teacher, target = _batch()
    teacher[3, 1] = math.nan
    obj = _objective(0.99)
    out = obj(logits, target, teacher_logits=teacher, student_taps={"h": torch.randn(8, 3)},
              indices=torch.arange(8), images=torch.randn(8, 1, 2, 2))
    assert torch.isnan(out["kd"]) and torch.isnan(out["loss"])


def test_selection_needs_teacher_logits_and_reserves_its_name():
    with pytest.raises(ValueError, match="needs the teacher's logits"):
        _objective(0.5)(_batch()[0], torch.zeros(8, dtype=torch.long), student_taps={"h": torch.randn(8, 3)},
                        indices=torch.arange(8), images=torch.randn(8, 1, 2, 2))
    with pytest.raises(ValueError, match="not 'loss' or 'ce' or 'selected'"):
        Objective([Term("selected", KDLoss())], selection=InstanceSelection())


def test_build_selection_reads_the_config():
    from unikd.engine import load_config

    cfg = load_config(None, ["epochs=12", "selection.method=kd3", "selection.threshold=0.7",
                             "selection.teacher_share=[0.9, 0.3]", "selection.weights=confidence",
                             "teacher.model=tiny_cnn", "teacher.checkpoint=x.pt", "method=kd"])
    sel = build_selection(cfg)
    assert sel == InstanceSelection(0.7, 0.9, 0.3, 12.0, "confidence")  # ramp: the run's epochs
    assert sel.teacher_share(6.0) == pytest.approx(0.6)
    assert "0.9 -> 0.3 over 12 epochs" in sel.describe()
    assert build_selection(load_config(None, [])) is None
