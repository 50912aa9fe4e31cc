"""Weighted transformed teacher matching, WTTM (Zheng and Yang, "Knowledge Distillation Based on Transformed
Teacher Matching", ICLR 2024, arXiv:2402.11148; official code github.com/zkxufo/TTM,
``distiller_zoo/wttm.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_positive, nan_if_nonfinite
from .ttm import _transformed


def wttm_loss(student_logits: Tensor, teacher_logits: Tensor, *, power: float = 1.0) -> Tensor:
    """``mean_n( sum_c p_t^l * KL(p_t^l / sum(p_t^l) || softmax(z_s)) )``: TTM with a per-sample weight.

    The weight of a sample is the power sum ``sum_c p_t,c^l`` of its teacher probabilities (the
    normaliser of the transformed teacher, detached with the teacher): for l < 1 it is larger for smoother
    teacher distributions. Computed as ``exp(logsumexp(l * log p_t))``.

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        power: l > 0. Default 1.0 (the authors' default, where every weight is 1 and WTTM equals TTM).
    """
    log_q, log_s, zt = _transformed(student_logits, teacher_logits, power)
    with torch.no_grad():
        weight = (zt.log_softmax(dim=1) * float(power)).logsumexp(dim=1).exp()  # (N,) sum_c p_t^l
    per_sample = (log_q.exp() * (log_q - log_s)).sum(dim=1)  # (N,) KL of each sample
    return nan_if_nonfinite((weight * per_sample).mean(), log_s, log_q)  # NaN for non-finite logits


class WTTMLoss(nn.Module):
    """Module form of :func:`wttm_loss`, called as ``loss(student_logits, teacher_logits, target=None)``."""

    requires = ("teacher_logits",)

    def __init__(self, *, power: float = 1.0) -> None:
        super().__init__()
        self.power = check_positive(power, "power")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        # ``target`` is accepted so the harness can call every teacher loss alike; WTTM does not use it.
        return wttm_loss(student_logits, teacher_logits, power=self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}"
