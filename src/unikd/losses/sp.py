"""Similarity-preserving knowledge distillation, SP (Tung and Mori, "Similarity-Preserving Knowledge
Distillation", ICCV 2019, arXiv:1907.09682)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ._features import check_feature, check_feature_list, check_same_batch, common_dtype


def _similarity(f: Tensor) -> Tensor:
    """``(N, N)`` batch Gram matrix of the flattened features with L2-normalised rows."""
    f = f.flatten(1)  # (N, C*H*W)
    return F.normalize(f @ f.t(), p=2, dim=1)


def sp_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """``||G~_t - G~_s||_F^2 / N^2`` with ``G~`` the row-normalised batch similarity ``F F^T`` (paper eq. 4).

    ``F`` is the ``(N, C*H*W)`` flattened feature map; rows are divided by ``max(||row||, 1e-12)``
    (``F.normalize``, as RepDistiller / mdistiller ``distillers/SP.py``). Teacher detached.

    Args:
        student_feat, teacher_feat: ``(N, ...)`` feature maps (typically ``(N, C, H, W)``) of one batch;
            channel counts and spatial sizes may differ.
    """
    s = check_feature(student_feat, "student_feat")
    t = check_feature(teacher_feat, "teacher_feat").detach()
    check_same_batch(s, t, "student_feat", "teacher_feat")
    dt = common_dtype(s, t)
    n = s.shape[0]
    return (_similarity(t.to(dt)) - _similarity(s.to(dt))).square().sum() / (n * n)


class SPLoss(nn.Module):
    """:func:`sp_loss` summed over chosen stage outputs (the paper's sum over layer pairs).

    ``stages`` indexes the tap outputs (tap kind ``"stages"``); the default ``(-1,)`` is the last stage, the
    layer RepDistiller and mdistiller use on CIFAR-100 (mdistiller ``feats[-1]``).
    """

    requires = ("student_features", "teacher_features")
    taps = "stages"

    def __init__(self, *, stages: Sequence[int] = (-1,)) -> None:
        super().__init__()
        if isinstance(stages, int) or not isinstance(stages, Sequence) or len(stages) == 0:
            raise ValueError(f"stages must be a non-empty list of stage indices such as [-1], got {stages!r}")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in stages):
            raise ValueError(f"stages must hold ints (indices into the tap outputs), got {stages!r}")
        self.stages = tuple(stages)

    def forward(
        self, student_logits: Tensor, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> Tensor:
        fs = check_feature_list(student_features, "student_features")
        ft = check_feature_list(teacher_features, "teacher_features")
        if len(fs) != len(ft):
            raise ValueError(
                f"student_features has {len(fs)} entries but teacher_features {len(ft)}; the taps of both "
                "networks must pair up"
            )
        for i in self.stages:
            if not -len(fs) <= i < len(fs):
                raise ValueError(
                    f"stage index {i} is out of range for {len(fs)} tap outputs; choose stages in "
                    f"[{-len(fs)}, {len(fs) - 1}]"
                )
        total = sp_loss(fs[self.stages[0]], ft[self.stages[0]])
        for i in self.stages[1:]:
            total = total + sp_loss(fs[i], ft[i])
        return total

    def extra_repr(self) -> str:
        return f"stages={self.stages}"
