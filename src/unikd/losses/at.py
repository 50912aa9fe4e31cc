"""Attention transfer, AT (Zagoruyko and Komodakis, "Paying More Attention to Attention: Improving the
Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017, arXiv:1612.03928), in the
form of the CIFAR-100 benchmark code (megvii-research/mdistiller ``mdistiller/distillers/AT.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import as_float32, nan_if_nonfinite


def _attention(f: Tensor, p: float) -> Tensor:
    """``normalize(mean_c f**p)``: the L2-normalised spatial attention map, ``(N, C, H, W) -> (N, H*W)``."""
    a = f.pow(p).mean(dim=1).reshape(f.shape[0], -1)  # (N, H*W)
    return F.normalize(a, p=2.0, dim=1, eps=1e-12)  # a / max(||a||_2, 1e-12), as the benchmark code


def _check_maps(feats: object, name: str) -> list[Tensor]:
    if isinstance(feats, Tensor) or not isinstance(feats, Sequence) or len(feats) == 0:
        raise ValueError(
            f"{name} must be a non-empty list of (N, C, H, W) feature maps, got {type(feats).__name__}"
        )
    out = []
    for i, f in enumerate(feats):
        if not isinstance(f, Tensor) or not f.is_floating_point() or f.dim() != 4 or f.shape[0] == 0:
            what = (
                f"{f.dtype} tensor of shape {tuple(f.shape)}" if isinstance(f, Tensor) else type(f).__name__
            )
            raise ValueError(
                f"{name}[{i}] must be a floating (N, C, H, W) feature map with N >= 1, got {what}"
            )
        out.append(as_float32(f))
    return out


def at_loss(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], *, p: float = 2.0) -> Tensor:
    """``sum_j mean((Q_s^j - Q_t^j)**2)`` with ``Q^j = normalize(mean_c (F^j)**p)`` flattened over positions.

    For each pair of stage outputs ``F_s^j`` (N, C_s, H_s, W_s) and ``F_t^j`` (N, C_t, H_t, W_t), the larger
    map is first adaptive-average-pooled to the smaller spatial size (channel counts may differ); the mean
    runs over the batch and the positions, as in the benchmark code (which weights the sum by 1000).

    Args:
        student_feats: list of student feature maps (float32/bf16/fp16; computed in float32).
        teacher_feats: list of teacher feature maps, same length, detached.
        p: exponent of the attention map, > 0 (the paper and benchmark use 2; non-integer powers need
            non-negative maps, e.g. post-ReLU features).

    Returns:
        0-dim float32 tensor, unweighted. The ordinary cross-entropy is not included.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
        raise ValueError(f"p must be a finite number > 0, got {p!r}")
    fs = _check_maps(student_feats, "student_feats")
    ft = [t.detach() for t in _check_maps(teacher_feats, "teacher_feats")]
    if len(fs) != len(ft):
        raise ValueError(
            f"student_feats has {len(fs)} maps but teacher_feats has {len(ft)}; pair the same number of "
            "stages (taps.student.stages / taps.teacher.stages)"
        )
    total = None
    for j, (s, t) in enumerate(zip(fs, ft)):
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"stage {j}: student batch {s.shape[0]} != teacher batch {t.shape[0]}")
        if s.device != t.device:
            raise ValueError(
                f"stage {j}: student map on {s.device}, teacher map on {t.device}; use one device"
            )
        size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
        if tuple(s.shape[2:]) != size:
            s = F.adaptive_avg_pool2d(s, size)
        if tuple(t.shape[2:]) != size:
            t = F.adaptive_avg_pool2d(t, size)
        term = (_attention(s, p) - _attention(t, p)).pow(2).mean()
        total = term if total is None else total + term
    assert total is not None
    # every element reaches the maps' norms, so non-finite maps make the total inf or NaN (docs/losses.md)
    return nan_if_nonfinite(total)


class ATLoss(nn.Module):
    """Module form of :func:`at_loss`: ``loss(student_logits, student_features, teacher_features)`` with the
    lists of stage outputs (the ``stages`` tap)."""

    requires = ("student_features", "teacher_features")
    taps = "stages"

    def __init__(self, *, p: float = 2.0) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
            raise ValueError(f"p must be a finite number > 0, got {p!r}")
        self.p = float(p)

    def forward(
        self, student_logits: Tensor, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> Tensor:
        return at_loss(student_features, teacher_features, p=self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
