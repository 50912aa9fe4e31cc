"""Generalized Jensen-Shannon divergence with its skew beta, as in GKD (Agarwal, Vieillard, Zhou, Stanczyk,
Garea, Geist and Bachem, "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes",
ICLR 2024, arXiv:2306.13649, Eq. 1), following TRL's ``GKDTrainer.generalized_jsd_loss``
(github.com/huggingface/trl, ``trl/trainer/gkd_trainer.py``, commit a9fa292c)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_logits, check_pair, check_positive, nan_if_nonfinite


def check_beta(value: float) -> float:
    """The JSD skew: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"beta must be a number in [0, 1] (0: forward KL, 1: reverse KL), got {value!r}")
    return float(value)


def jsd_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, beta: float = 0.5, temperature: float = 1.0
) -> Tensor:
    """Generalized JSD ``beta KL(T || M) + (1 - beta) KL(S || M)``, ``M = beta T + (1 - beta) S``, batch mean.

    T and S are the teacher's and the student's softmax at temperature ``temperature``. As in TRL, the two
    end points are the KL divergences themselves: ``beta = 0`` gives the forward ``KL(T || S)`` and
    ``beta = 1`` the reverse ``KL(S || T)`` (the general formula would tend to 0 there). No ``T**2`` factor
    (TRL has none). Summed over classes, averaged over the rows.

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        beta: skew in [0, 1] (default 0.5, TRL's default).
        temperature: T > 0 (default 1.0).
    """
    b = check_beta(beta)
    t = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    loss = jsd_kernel(zs, zt, beta=b, temperature=t, denom=zs.shape[0])
    return nan_if_nonfinite(loss, zs, zt)  # NaN for non-finite logits (docs/losses.md)


def jsd_kernel(zs: Tensor, zt: Tensor, *, beta: float, temperature: float, denom: float) -> Tensor:
    """The generalized-JSD sum over the rows of validated ``(N, C)`` logits, divided by ``denom``.

    Shared by :func:`jsd_loss` (``denom`` = N) and the token-level forms in :mod:`unikd.token`.
    """
    if temperature != 1.0:  # skip two (N, C) copies at T = 1
        zs, zt = zs / temperature, zt / temperature
    log_s = zs.log_softmax(dim=1)  # (N, C)
    log_t = zt.log_softmax(dim=1)  # (N, C)
    if beta == 0.0:
        total = F.kl_div(log_s, log_t, reduction="sum", log_target=True)  # KL(T || S)
    elif beta == 1.0:
        total = F.kl_div(log_t, log_s, reduction="sum", log_target=True)  # KL(S || T)
    else:
        # log M = logaddexp(log S + log(1 - beta), log T + log beta): one (N, C) buffer, no stack.
        log_m = torch.logaddexp(log_s + math.log1p(-beta), log_t + math.log(beta))
        kl_teacher = F.kl_div(log_m, log_t, reduction="sum", log_target=True)  # KL(T || M)
        kl_student = F.kl_div(log_m, log_s, reduction="sum", log_target=True)  # KL(S || M)
        total = beta * kl_teacher + (1.0 - beta) * kl_student
    return total / denom


class JSDLoss(nn.Module):
    """Module form of :func:`jsd_loss`, called as ``loss(student_logits, teacher_logits, target=None)``."""

    requires = ("teacher_logits",)

    def __init__(self, *, beta: float = 0.5, temperature: float = 1.0) -> None:
        super().__init__()
        self.beta = check_beta(beta)
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        # ``target`` is accepted so every teacher loss is called the same way; the JSD does not use it.
        return jsd_loss(student_logits, teacher_logits, beta=self.beta, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, temperature={self.temperature}"
