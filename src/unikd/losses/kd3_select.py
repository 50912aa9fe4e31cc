"""KD³ dynamic instance selection (Tang, Chen, Niu, Sugiyama and Gong, "Distribution Shift Matters for
Knowledge Distillation with Webly Collected Images", ICCV 2023, arXiv:2307.11469), part 1 of 3.

Images collected from the web (or any transfer set) follow another distribution than the teacher's training
data; many are useless or harmful to distil on. KD³ "dynamically select[s] useful training instances from
the webly collected data according to the combined predictions of teacher network and student network"
(the paper's abstract). This file is that selection, as per-sample weights of one batch:

    p_i = a(t) * softmax(z_T,i) + (1 - a(t)) * softmax(z_S,i)      (the combined prediction)
    keep_i = max_k p_ik >= threshold
    w_i = keep_i                          (weights="mask")
    w_i = keep_i * max_k p_ik             (weights="confidence")

with the teacher's share ``a(t)`` moving linearly from ``share_start`` to ``share_end`` over ``ramp_epochs``
(``t`` = finished epochs, fractional), then constant. The selection is recomputed at every step, so it
follows the student as it learns ("dynamic"), and needs no pass over the whole transfer set.

The paper's method section could not be read, so these choices are this library's, not the paper's: the
convex combination and its linear schedule (start 1.0: the untrained student has no say; end 0.5: equal
say), the confidence (largest combined probability) compared with a fixed threshold, the two weight forms,
and the per-step (not per-epoch) selection. The weights carry no gradient (they are a selection, not a
loss), so there is no gradcheck for them; :mod:`unikd.engine.objective.selection` applies them to the
objective.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import check_logits, check_pair

WEIGHTS = ("mask", "confidence")


def kd3_teacher_share(epoch_progress: float, *, start: float = 1.0, end: float = 0.5,
                      ramp_epochs: float = 0.0) -> float:
    """The teacher's share ``a(t)`` of the combined prediction after ``epoch_progress`` epochs.

    Linear from ``start`` (at 0) to ``end`` (at ``ramp_epochs``), then ``end``; ``ramp_epochs=0``: ``end``
    from the start.
    """
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"the teacher share {name} must be a number in [0, 1], got {value!r}")
    if isinstance(ramp_epochs, bool) or not isinstance(ramp_epochs, (int, float)) or not (
            math.isfinite(ramp_epochs) and ramp_epochs >= 0):
        raise ValueError(f"ramp_epochs must be a finite number >= 0, got {ramp_epochs!r}")
    if ramp_epochs == 0:
        return float(end)
    f = min(1.0, max(0.0, float(epoch_progress)) / ramp_epochs)
    return float(start + (end - start) * f)


@torch.no_grad()
def kd3_select_weights(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    teacher_share: float = 1.0,
    threshold: float = 0.5,
    weights: str = "mask",
) -> Tensor:
    """Per-sample selection weights ``(N,)`` float32 in [0, 1] (0: not selected), without gradient.

    Args:
        student_logits, teacher_logits: ``(N, C)`` logits of the same batch (any float dtype).
        teacher_share: ``a`` in [0, 1], the teacher's share of the combined prediction.
        threshold: a row is selected when its combined prediction's largest probability is at least this,
            in (0, 1] (at most ``1/C`` selects every row).
        weights: ``"mask"`` (1 for a selected row) or ``"confidence"`` (its largest combined probability).

    Non-finite logits give NaN weights in their rows (the loss of such a step is NaN anyway).
    """
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits")
    check_pair(zs, zt, "teacher_logits")
    if isinstance(teacher_share, bool) or not isinstance(teacher_share, (int, float)) or not (
            0.0 <= teacher_share <= 1.0):
        raise ValueError(f"teacher_share must be a number in [0, 1], got {teacher_share!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    p = teacher_share * zt.float().softmax(dim=1) + (1.0 - teacher_share) * zs.float().softmax(dim=1)
    confidence = p.max(dim=1).values
    keep = (confidence >= threshold).float()
    out = keep if weights == "mask" else keep * confidence
    return torch.where(torch.isnan(confidence), confidence, out)


__all__ = ["WEIGHTS", "kd3_select_weights", "kd3_teacher_share"]
