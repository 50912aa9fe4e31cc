"""Transformed teacher matching, TTM (Zheng and Yang, "Knowledge Distillation Based on Transformed Teacher
Matching", ICLR 2024, arXiv:2402.11148; official code github.com/zkxufo/TTM, ``distiller_zoo/ttm.py``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_logits, check_pair, check_positive, nan_if_nonfinite


def ttm_loss(student_logits: Tensor, teacher_logits: Tensor, *, power: float = 1.0) -> Tensor:
    """``KL(p_t^l / sum(p_t^l) || softmax(z_s))``, summed over classes, averaged over the batch.

    The teacher's probabilities ``p_t = softmax(z_t)`` are raised to the power l (the authors' ``--ttm_l``,
    gamma in the paper) and renormalised; the student is not softened and there is no ``T**2`` factor. The
    power transform equals a teacher temperature of 1/l: ``p_t^l / sum(p_t^l) = softmax(l * z_t)``, which is
    how it is computed here (in log space, so tiny teacher probabilities do not underflow before the power).

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        power: l > 0. Default 1.0 (the authors' default, which is plain KD at T=1); their CIFAR-100 example
            (VGG13 -> VGG8) uses l = 0.1 with loss weight 45 and CE weight 1.
    """
    log_q, log_s, _ = _transformed(student_logits, teacher_logits, power)
    # a non-finite logit leaves a non-finite log-probability in its row: NaN (docs/losses.md)
    return nan_if_nonfinite(F.kl_div(log_s, log_q, reduction="batchmean", log_target=True), log_s, log_q)


def _transformed(
    student_logits: Tensor, teacher_logits: Tensor, power: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(log of the transformed teacher, student log-probabilities, teacher logits)``, all ``(N, C)``,
    validated and in float32 (the teacher detached)."""
    lam = check_positive(power, "power")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    return (zt * lam).log_softmax(dim=1), zs.log_softmax(dim=1), zt


class TTMLoss(nn.Module):
    """Module form of :func:`ttm_loss`, called as ``loss(student_logits, teacher_logits, target=None)``."""

    requires = ("teacher_logits",)

    def __init__(self, *, power: float = 1.0) -> None:
        super().__init__()
        self.power = check_positive(power, "power")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        # ``target`` is accepted so the harness can call every teacher loss the same way; TTM does not use it.
        return ttm_loss(student_logits, teacher_logits, power=self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}"
