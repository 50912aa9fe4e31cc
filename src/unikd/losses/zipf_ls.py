"""Zipf's label smoothing (Liang, Li, Bing, Zhao, Tang, Lin and Fan, "Efficient One Pass Self-distillation
with Zipf's Label Smoothing", ECCV 2022; official code github.com/megvii-research/zipfls)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import (
    check_logits,
    check_positive,
    masked_log_softmax,
    nan_if_nonfinite,
    normalise_nontarget,
    parse_target,
)
from ._zipf_ranks import zipf_rank_weights


def zipf_ls_loss(
    student_logits: Tensor, target: Tensor, *, power: float = 1.0, only_correct: bool = False
) -> Tensor:
    """``KL(Z || N(S))`` over the non-target classes: Zipf soft labels from the student's own ranking.

    Z_i is proportional to ``1 / r_i**power``, r_i being class i's 1-based rank among **all** classes by the
    student's (detached) logits, ties sharing the smallest rank (scipy ``rankdata(method="min")``, as the
    official code); the target column is then dropped and Z renormalised over the non-targets. N(S) is the
    softmax over the non-target logits. KL summed over classes, averaged over the batch.

    This is the paper's logit-ranking variant (the official script's default ``dense=False``); the dense
    variant, which ranks by per-pixel votes of the last feature map, needs the feature map and is not
    implemented. The caller adds the cross-entropy; the official script weights this term by
    ``loss_lambda = 1.0``.

    Args:
        student_logits: ``(N, C)``.
        target: int64 ``(N,)`` indices, or float ``(N, C)`` soft labels, of which the argmax class is used.
        power: Zipf exponent (default 1.0, the official ``--power`` default).
        only_correct: average only over samples whose argmax prediction equals the target (the official
            ``loss_mask`` option, off by default); the loss is 0 when none is correct.
    """
    p = check_positive(power, "power")
    zs = check_logits(student_logits, "student_logits")
    n, c = zs.shape
    tg = parse_target(target, n, c, device=zs.device)
    idx = tg.index  # (N, 1)
    with torch.no_grad():
        z = normalise_nontarget(zipf_rank_weights(zs, power=p, ties="min"), idx)  # (N, C), 0 at the target
        ent = torch.special.xlogy(z, z).sum(dim=1)  # sum Z log Z, the constant part of the KL
    nls = masked_log_softmax(zs, idx)
    per_sample = ent - (z * nls).sum(dim=1)  # (N,)
    if not only_correct:
        return nan_if_nonfinite(per_sample.mean(), zs, tg.soft)  # docs/losses.md
    correct = (zs.detach().argmax(dim=1, keepdim=True) == idx).squeeze(1).float()
    return nan_if_nonfinite((per_sample * correct).sum() / correct.sum().clamp_min(1.0), zs, tg.soft)


class ZipfLSLoss(nn.Module):
    """Module form of :func:`zipf_ls_loss`, called as ``loss(student_logits, target)``."""

    requires = ("target",)

    def __init__(self, *, power: float = 1.0, only_correct: bool = False) -> None:
        super().__init__()
        self.power = check_positive(power, "power")
        self.only_correct = bool(only_correct)

    def forward(self, student_logits: Tensor, target: Tensor) -> Tensor:
        return zipf_ls_loss(student_logits, target, power=self.power, only_correct=self.only_correct)

    def extra_repr(self) -> str:
        return f"power={self.power}, only_correct={self.only_correct}"
