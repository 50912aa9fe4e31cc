"""Extended knowledge distillation (Chen Yuan and Rong Pan, "Obtain Dark Knowledge via Extended Knowledge
Distillation", AIAM 2019, DOI 10.1109/AIAM48774.2019.00106): logit KD plus a second part that matches the
networks' interior. Teacher and student are divided into K segments and each student segment's output is
made close to the teacher's.

This file is that second part; the logit part is the ``kd`` term beside it in ``loss.terms``, so a run's
objective is ``ce_weight * CE + kd_weight * KD + weight * extended_kd`` with

    extended_kd = sum_k w_k * MSE(A_k(S_k), T_k) / sum_k w_k

``S_k`` / ``T_k`` the student's / teacher's output at the k-th segment boundary, ``A_k`` the connector that
maps the student's map to the teacher's shape, ``w_k >= 0`` the per-segment weights.

The paper's full text was not available, so every choice below is this library's, not the paper's:

- segment boundaries: the tap kind ``segments``, by default every stage output the zoo's feature taps
  expose (the ``stages`` of docs/training.md); ``taps.student.segments`` / ``taps.teacher.segments``
  list other module paths (the same count for both networks);
- connector ``A_k``: a spatial resize to the teacher's size when the sizes differ (adaptive average pooling
  when the student's map is at least as large in both dimensions, which for integer factors is the mean of
  each block; bilinear interpolation, ``align_corners=False``, otherwise), then, when the channel counts
  differ, a 1x1 convolution (no bias) and BatchNorm, without a ReLU; equal shapes get no connector, so
  the student's own features must match the teacher's;
- distance: the mean squared error over batch, channels and positions, per segment (as FitNet's);
- weights: ``weights`` a list of K non-negative numbers (not all 0) or one number for every segment; the
  term is their weighted MEAN, so the weights set the segments' shares and the term's ``weight`` alone its
  strength (a scalar therefore means equal shares); default: equal shares;
- training: both parts jointly from the first step (no separate stage-wise pre-training); the teacher's
  features are detached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import as_float32, nan_if_nonfinite
from ._features import check_feature_list, check_map, check_same_batch, check_shapes, common_dtype


def _segment_weights(weights: object, k: int) -> list[float]:
    """``weights`` (None, one number or K numbers) as K non-negative floats with a positive sum."""
    if weights is None:
        return [1.0] * k
    if isinstance(weights, (int, float)) and not isinstance(weights, bool):
        values = [float(weights)] * k
    elif isinstance(weights, Sequence) and not isinstance(weights, (str, bytes)):
        values = [float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) else math.nan
                  for w in weights]
        if len(values) != k:
            raise ValueError(
                f"weights lists {len(values)} values but there are {k} segments; give one weight per segment "
                "(taps.student.segments / taps.teacher.segments list the segment boundaries) or one number"
            )
    else:
        raise ValueError(f"weights must be a number or a list of numbers, one per segment, got {weights!r}")
    if not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"weights must be finite numbers >= 0, not all 0, got {weights!r}")
    return values


def extended_kd_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    *,
    weights: float | Sequence[float] | None = None,
) -> Tensor:
    """``sum_k w_k * mean((student_feats[k] - teacher_feats[k])**2) / sum_k w_k``.

    Args:
        student_feats: the student's K segment outputs AFTER the connectors, each of its teacher
            counterpart's shape (float32/bf16/fp16; computed in float32, float64 kept).
        teacher_feats: the teacher's K segment outputs; detached.
        weights: per-segment weights: None (equal), one number (equal) or K numbers >= 0, not all 0.

    Returns:
        0-dim float32 tensor (float64 for float64 inputs), unweighted by the term's own ``weight``. The
        cross-entropy and the logit KD part are not included. Non-finite maps give NaN.
    """
    fs = check_feature_list(student_feats, "student_feats")
    ft = check_feature_list(teacher_feats, "teacher_feats")
    if len(fs) != len(ft):
        raise ValueError(
            f"student_feats has {len(fs)} segment outputs but teacher_feats has {len(ft)}; pair the same "
            "number of segments (taps.student.segments / taps.teacher.segments)"
        )
    w = _segment_weights(weights, len(fs))
    total = None
    for k, (s, t) in enumerate(zip(fs, ft)):
        s, t = _check_pair(s, t, k)
        dtype = common_dtype(s, t)
        term = w[k] * F.mse_loss(s.to(dtype), t.to(dtype), reduction="mean")
        total = term if total is None else total + term
    assert total is not None
    # every element reaches its segment's MSE; an inf map would give inf, NaN is the contract (docs/losses.md)
    return nan_if_nonfinite(total / sum(w))


def _check_pair(s: object, t: object, k: int) -> tuple[Tensor, Tensor]:
    s, t = check_map(s, f"student_feats[{k}]"), check_map(t, f"teacher_feats[{k}]")
    if s.shape != t.shape:
        raise ValueError(
            f"segment {k}: shape mismatch: student {tuple(s.shape)} vs teacher {tuple(t.shape)}; map the "
            "student's output to the teacher's shape first (ExtendedKDLoss owns those connectors)"
        )
    check_same_batch(s, t, f"student_feats[{k}]", f"teacher_feats[{k}]")
    return as_float32(s), as_float32(t).detach()


class SegmentConnector(nn.Module):
    """Maps a student segment output of per-sample shape ``(C_s, H_s, W_s)`` to the teacher's
    ``(C_t, H_t, W_t)``: resize (adaptive average pooling down, bilinear otherwise), then 1x1 conv + BN when
    the channel counts differ. Equal shapes (of any rank) pass through unchanged."""

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(student_shape), tuple(teacher_shape)
        self.proj: nn.Module | None = None
        if self.in_shape == self.out_shape:
            return
        if len(self.in_shape) != 3 or len(self.out_shape) != 3:
            raise ValueError(
                f"no connector maps a student output {self.in_shape} to a teacher output {self.out_shape}: "
                "different shapes need (C, H, W) feature maps; tap convolutional stages "
                "(taps.student.segments / taps.teacher.segments)"
            )
        s_c, t_c = self.in_shape[0], self.out_shape[0]
        if s_c != t_c:
            self.proj = nn.Sequential(nn.Conv2d(s_c, t_c, kernel_size=1, bias=False), nn.BatchNorm2d(t_c))

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"the segment connector built for a student output {self.in_shape} got {tuple(x.shape[1:])}; "
                "the feature shapes differ from those measured at start-up"
            )
        if self.in_shape == self.out_shape:
            return x
        size = tuple(self.out_shape[1:])
        if tuple(x.shape[2:]) != size:
            if x.shape[2] >= size[0] and x.shape[3] >= size[1]:
                x = F.adaptive_avg_pool2d(x, size)
            else:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.proj is not None:
            # the connector's own dtype (float32, or float64 under gradcheck); autocast still applies inside
            x = self.proj(x.to(self.proj[0].weight.dtype))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_shape} -> {self.out_shape}"


class ExtendedKDLoss(nn.Module):
    """The interior part of Extended-KD: :func:`extended_kd_loss` of the connected student segment outputs
    and the teacher's.

    Called as ``loss(student_logits, student_features, teacher_features)`` with the K outputs at the
    ``segments`` taps of each network. Built from their per-sample shapes; owns one
    :class:`SegmentConnector` per segment (trainable where channels differ: the harness puts them in the
    optimizer and the checkpoint). Pair it with a ``kd`` term for the paper's logit part.
    """

    requires = ("student_features", "teacher_features")
    taps = "segments"

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        *,
        weights: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        s_shapes = check_shapes(student_shapes, "student_shapes")
        t_shapes = check_shapes(teacher_shapes, "teacher_shapes")
        if len(s_shapes) != len(t_shapes):
            raise ValueError(
                f"Extended-KD pairs the k-th segment of each network, but the student has {len(s_shapes)} "
                f"segment outputs and the teacher {len(t_shapes)}; list as many for both "
                "(taps.student.segments / taps.teacher.segments)"
            )
        self.weights = _segment_weights(weights, len(s_shapes))
        self.connectors = nn.ModuleList(SegmentConnector(s, t) for s, t in zip(s_shapes, t_shapes))

    def forward(
        self, student_logits: Tensor, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> Tensor:
        fs = check_feature_list(student_features, "student_features")
        ft = check_feature_list(teacher_features, "teacher_features")
        if len(fs) != len(self.connectors) or len(ft) != len(self.connectors):
            raise ValueError(
                f"ExtendedKDLoss was built for {len(self.connectors)} segments but got {len(fs)} student and "
                f"{len(ft)} teacher outputs"
            )
        for k, x in enumerate(fs):
            if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
                what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"student_features[{k}] must be a floating (N, ...) tensor, got {what}")
        mapped = [a(x) for a, x in zip(self.connectors, fs)]
        return extended_kd_loss(mapped, ft, weights=self.weights)

    def extra_repr(self) -> str:
        return f"segments={len(self.connectors)}, weights={self.weights}"


__all__ = ["ExtendedKDLoss", "SegmentConnector", "extended_kd_loss"]
