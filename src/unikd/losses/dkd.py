"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge Distillation",
CVPR 2022; official code github.com/megvii-research/mdistiller), optionally on standardized logits (Sun et
al., CVPR 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import (
    check_logits,
    check_pair,
    check_positive,
    check_weight,
    masked_log_softmax,
    nan_if_nonfinite,
    nontarget_lse,
    parse_target,
)
from .standardize import check_flag, standardize_logits


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> Tensor:
    """``alpha * TCKD + beta * NCKD``, both multiplied by ``T**2``, averaged over the batch.

    With ``p = softmax(z/T)`` and t the target class:

    - TCKD = KL(b^T || b^S) on the binary distributions ``b = [p_t, 1 - p_t]``;
    - NCKD = KL(q^T || q^S) on the non-target distributions ``q = softmax over the non-target z/T``.

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        target: int64 ``(N,)`` class indices, or float ``(N, C)`` soft labels (mixup/cutmix), of which DKD
            uses the argmax class as its single target (as NKD does).
        alpha, beta: TCKD and NCKD weights, >= 0 (defaults 1 and 8: mdistiller's CIFAR-100 default; its
            configs use beta=2 for res56->res20 and res110->res32, beta=6 for several VGG/WRN pairs).
        temperature: T > 0 (default 4).
        standardize: z-score both logits per sample before the temperature (logit standardization, as the
            authors' ``dkd_loss`` with ``--logit-stand``); their CIFAR-100 runs then use T=2 (T=3 for
            ResNet56->ResNet20) and multiply alpha and beta by a KD weight of 9-18.

    ``1 - p_t`` is computed in log space from the non-target log-sum-exp, so it stays exact when p_t -> 1.
    """
    t = check_positive(temperature, "temperature")
    a, b = check_weight(alpha, "alpha"), check_weight(beta, "beta")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    if check_flag(standardize, "standardize"):
        zs, zt = standardize_logits(zs), standardize_logits(zt)
    n, c = zs.shape
    tg = parse_target(target, n, c, max_targets=1, device=zs.device)
    loss = dkd_kernel(zs, zt, tg.index, alpha=a, beta=b, temperature=t, denom=n)
    return nan_if_nonfinite(loss, zs, zt, tg.soft)  # NaN for non-finite inputs (docs/losses.md)


def dkd_kernel(
    zs: Tensor, zt: Tensor, idx: Tensor, *, alpha: float, beta: float, temperature: float, denom: float
) -> Tensor:
    """The DKD sum over the rows of validated ``(N, C)`` logits with targets ``idx`` ``(N, 1)``, / ``denom``.

    Shared by :func:`dkd_loss` (``denom`` = N) and the token-level forms in :mod:`unikd.token`.
    """
    t = temperature
    zs, zt = zs / t, zt / t
    nls = masked_log_softmax(zs, idx)  # (N, C) student non-target log-probs
    nlt = masked_log_softmax(zt, idx)  # (N, C) teacher non-target log-probs
    bs, bt = _binary_log_probs(zs, nls, idx), _binary_log_probs(zt, nlt, idx)  # (N, 2) each
    tckd = F.kl_div(bs, bt, reduction="sum", log_target=True) / denom
    nckd = F.kl_div(nls, nlt, reduction="sum", log_target=True) / denom  # masked columns contribute 0
    return (alpha * tckd + beta * nckd) * (t * t)


def _binary_log_probs(z: Tensor, nlp: Tensor, idx: Tensor) -> Tensor:
    """``[log p_t, log(1 - p_t)]`` ``(N, 2)`` from z_t and the non-target log-sum-exp (exact as p_t -> 1)."""
    d = z.gather(1, idx) - nontarget_lse(z, nlp)  # log p_t - log(1 - p_t), (N, 1)
    return F.logsigmoid(torch.cat([d, -d], dim=1))


class DKDLoss(nn.Module):
    """Module form of :func:`dkd_loss`, called as ``loss(student_logits, teacher_logits, target)``."""

    requires = ("teacher_logits", "target")

    def __init__(
        self, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, standardize: bool = False
    ) -> None:
        super().__init__()
        self.alpha = check_weight(alpha, "alpha")
        self.beta = check_weight(beta, "beta")
        self.temperature = check_positive(temperature, "temperature")
        self.standardize = check_flag(standardize, "standardize")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        return dkd_loss(
            student_logits,
            teacher_logits,
            target,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
            standardize=self.standardize,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
            f"standardize={self.standardize}"
        )
