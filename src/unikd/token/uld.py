"""Universal Logit Distillation (ULD) between models with different tokenizers.

Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss"
(arXiv 2402.12030). At each aligned pair, with ``p = softmax(z_s / T_s)`` over the student's ``Vs`` tokens
and ``q = softmax(z_t / T_t)`` over the teacher's ``Vt`` tokens, both sorted in descending order and the
shorter one padded with zeros to ``max(Vs, Vt)``::

    ULD = sum_k | p_(k) - q_(k) |

the closed form of the Wasserstein-1 distance between the two sorted distributions that the paper uses.
It needs no shared tokens, only aligned positions. The computation follows the authors' code
(Nicolas-BZRD/llm-recipes, ``models/distillation_model.py``, ``DistillationLoss``): separate student and
teacher temperatures (default 1, no ``T**2`` factor), zero padding, the L1 sum over the vocabulary, and with
``reduction="sequence_mean"`` and :func:`~unikd.token.truncation_alignment` their reduction (mean over each
sequence's aligned positions, then over sequences). Their total loss adds the student's cross-entropy with a
weight; here the caller adds it.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from unikd.losses._common import check_positive

from .alignment import TokenAlignment
from .cross import CROSS_TOKENIZER_LOSSES, aligned_rows, check_cross_reduction, empty_cross_loss, reduce_pairs


def uld_per_pair(rs: Tensor, rt: Tensor, student_temperature: float, teacher_temperature: float) -> Tensor:
    """``(P,)`` ULD values of aligned rows ``(P, Vs)`` and ``(P, Vt)``."""
    p = (rs / student_temperature).softmax(dim=-1).sort(dim=-1, descending=True).values
    q = (rt / teacher_temperature).softmax(dim=-1).sort(dim=-1, descending=True).values
    width = max(p.shape[-1], q.shape[-1])
    p = F.pad(p, (0, width - p.shape[-1]))
    q = F.pad(q, (0, width - q.shape[-1]))
    return (p - q).abs().sum(dim=-1)


def uld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    alignment: TokenAlignment,
    *,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """ULD between ``student_logits`` ``(B, Ts, Vs)`` and ``teacher_logits`` ``(B, Tt, Vt)`` on the pairs of
    ``alignment``; the teacher is detached. Returns a 0-dim tensor; 0 (zero gradient) without pairs."""
    ts = check_positive(student_temperature, "student_temperature")
    tt = check_positive(teacher_temperature, "teacher_temperature")
    reduction = check_cross_reduction(reduction)
    rs, rt, seq = aligned_rows(student_logits, teacher_logits, alignment)
    if rs.shape[0] == 0:
        return empty_cross_loss(student_logits)
    per_pair = uld_per_pair(rs, rt, ts, tt)
    return reduce_pairs(per_pair, seq, alignment.num_sequences, reduction, rs, rt)


class ULDLoss(nn.Module):
    """Module form of :func:`uld_loss`: ``loss(student_logits, teacher_logits, alignment)``."""

    def __init__(
        self, *, student_temperature: float = 1.0, teacher_temperature: float = 1.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.student_temperature = check_positive(student_temperature, "student_temperature")
        self.teacher_temperature = check_positive(teacher_temperature, "teacher_temperature")
        self.reduction = check_cross_reduction(reduction)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, alignment: TokenAlignment) -> Tensor:
        return uld_loss(
            student_logits,
            teacher_logits,
            alignment,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
            reduction=self.reduction,
        )


def _create(*, student_tokenizer: Any = None, teacher_tokenizer: Any = None, **hp: Any) -> ULDLoss:
    return ULDLoss(**hp)  # ULD compares sorted probabilities: it never reads the vocabularies


CROSS_TOKENIZER_LOSSES.register("uld", _create)

__all__ = ["ULDLoss", "uld_loss"]
