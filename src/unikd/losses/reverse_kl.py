"""Reverse KL distillation, ``KL(student || teacher)``: the mode-seeking divergence used for language models
by MiniLLM (Gu, Dong, Wei and Huang, "MiniLLM: Knowledge Distillation of Large Language Models", ICLR 2024,
arXiv:2306.08543) and as a baseline in DistiLLM and TAID."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_logits, check_pair, check_positive, nan_if_nonfinite


def reverse_kl_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(z_s/T) || softmax(z_t/T)) * T**2``, summed over classes, averaged over the batch.

    The student's own distribution weights the log-ratio, so the gradient pulls probability mass onto the
    teacher's modes instead of spreading it over the teacher's support (forward KL, :func:`kd_loss`).
    ``T**2`` keeps the gradient scale independent of T, as in KD.

    Args:
        student_logits: ``(N, C)`` (float32/bf16/fp16; computed in float32).
        teacher_logits: ``(N, C)``; detached.
        temperature: T > 0 (default 1.0).

    At T = 1 this equals ``reverse_kl`` of SakanaAI/TAID (``src/distil_losses/rkl.py``, itself taken from
    DistiLLM) on every row.
    """
    t = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    loss = reverse_kl_kernel(zs, zt, temperature=t, denom=zs.shape[0])
    return nan_if_nonfinite(loss, zs, zt)  # NaN for non-finite logits (docs/losses.md)


def reverse_kl_kernel(zs: Tensor, zt: Tensor, *, temperature: float, denom: float) -> Tensor:
    """The reverse-KL sum over the rows of validated ``(N, C)`` logits, divided by ``denom``.

    Shared by :func:`reverse_kl_loss` (``denom`` = N) and the token-level forms in :mod:`unikd.token`.
    """
    t = temperature
    if t != 1.0:  # skip two (N, C) copies at T = 1
        zs, zt = zs / t, zt / t
    log_s = zs.log_softmax(dim=1)  # (N, C)
    log_t = zt.log_softmax(dim=1)  # (N, C)
    # kl_div(input, target) = sum exp(target) (target - input): here target = the student.
    return F.kl_div(log_t, log_s, reduction="sum", log_target=True) * (t * t / denom)


class ReverseKLLoss(nn.Module):
    """Module form of :func:`reverse_kl_loss`: ``loss(student_logits, teacher_logits, target=None)``."""

    requires = ("teacher_logits",)

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        # ``target`` is accepted so every teacher loss is called the same way; reverse KL does not use it.
        return reverse_kl_loss(student_logits, teacher_logits, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
