"""Similarity-preserving knowledge distillation, SP (Tung and Mori, "Similarity-Preserving Knowledge
Distillation", ICCV 2019, arXiv:1907.09682)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import nan_if_nonfinite
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
    loss = (_similarity(t.to(dt)) - _similarity(s.to(dt))).square().sum() / (n * n)
    return nan_if_nonfinite(loss, s, t)  # NaN for non-finite maps, which F.normalize could hide (losses.md)


class SPLoss(nn.Module):
    """:func:`sp_loss` summed over the tapped pairs (the paper's sum over layer pairs).

    Tap kind ``"last"``: by default one pair, the last stage output of each network, the layer RepDistiller
    and mdistiller use on CIFAR-100 (mdistiller ``feats[-1]``); list several modules under the ``last`` tap
    of both networks for the multi-layer form.
    """

    requires = ("student_features", "teacher_features")
    taps = "last"

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
        total = sp_loss(fs[0], ft[0])
        for s, t in zip(fs[1:], ft[1:]):
            total = total + sp_loss(s, t)
        return total
