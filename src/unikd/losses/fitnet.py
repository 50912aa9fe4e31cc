"""FitNets hint learning (Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets: Hints for Thin Deep
Nets", ICLR 2015, arXiv:1412.6550), in the form of the CIFAR-100 benchmark code (HobbitLong/RepDistiller and
megvii-research/mdistiller ``mdistiller/distillers/FitNet.py``): a regressor maps the student's hint feature
map to the teacher's shape, and the loss is the mean squared error to the teacher's hint."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import as_float32, nan_if_nonfinite
from ._features import check_map


def _check_map(x: object, name: str) -> Tensor:
    return as_float32(check_map(x, name))


def fitnet_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """``mean((student_feat - teacher_feat)**2)`` over every element (batch, channels and positions).

    Args:
        student_feat: the student's hint after the regressor, same shape as ``teacher_feat``, typically
            ``(N, C_t, H_t, W_t)`` (float32/bf16/fp16; computed in float32).
        teacher_feat: the teacher's hint feature map; detached (no gradient reaches the teacher).

    Returns:
        0-dim float32 tensor, unweighted (the CIFAR-100 benchmark weights it by 100). The ordinary
        cross-entropy is not included.
    """
    s = _check_map(student_feat, "student_feat")
    t = _check_map(teacher_feat, "teacher_feat").detach()
    if s.shape != t.shape:
        raise ValueError(
            f"shape mismatch: student_feat {tuple(s.shape)} vs teacher_feat {tuple(t.shape)}; map the "
            "student's hint to the teacher's shape first (FitNetLoss owns that regressor)"
        )
    if s.device != t.device:
        raise ValueError(
            f"student_feat is on {s.device} but teacher_feat on {t.device}; move both to one device"
        )
    # every element reaches the MSE, so non-finite maps make it inf or NaN: NaN either way (docs/losses.md)
    return nan_if_nonfinite(F.mse_loss(s, t, reduction="mean"))


def _shape(value: object, name: str) -> tuple[int, int, int]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ValueError(
            f"{name} must be a per-sample feature-map shape (C, H, W) of positive ints, got {value!r}"
        )
    return int(value[0]), int(value[1]), int(value[2])


class HintRegressor(nn.Module):
    """Maps a ``(C_s, H_s, W_s)`` student map to ``(C_t, H_t, W_t)``: convolution, BatchNorm, ReLU.

    The convolution follows the benchmark's rule (mdistiller ``ConvReg``): ``H_s = 2 H_t`` -> 3x3 stride 2;
    ``2 H_s = H_t`` -> 4x4 stride-2 transposed convolution; ``H_s >= H_t`` -> a ``(1 + H_s - H_t) x
    (1 + W_s - W_t)`` convolution (1x1 for equal sizes). A student map smaller than the teacher's by another
    factor is not supported.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        s_c, s_h, s_w = _shape(student_shape, "student_shape")
        t_c, t_h, t_w = _shape(teacher_shape, "teacher_shape")
        self.out_shape = (t_c, t_h, t_w)
        conv: nn.Module
        if s_h == 2 * t_h:
            conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(
                f"no hint regressor maps a student map of {s_h}x{s_w} to a teacher map of {t_h}x{t_w} (the "
                "student's may be 2x larger, 2x smaller, or larger); tap a student stage of a suitable size "
                "(taps.student.hint / taps.teacher.hint)"
            )
        self.conv = conv
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.conv(x)))  # (N, C_t, H_t, W_t)
        if tuple(out.shape[1:]) != self.out_shape:
            raise ValueError(
                f"the hint regressor built for a teacher map {self.out_shape} produced "
                f"{tuple(out.shape[1:])} "
                f"from a student map {tuple(x.shape[1:])}; the feature shapes differ from those at start-up"
            )
        return out


class FitNetLoss(nn.Module):
    """FitNet: :func:`fitnet_loss` of the regressed student hint and the teacher hint.

    Called as ``loss(student_logits, student_features, teacher_features)`` with one-element lists holding the
    hint feature maps (the ``hint`` tap: the second stage of the zoo models, as the benchmark's hint layer 2).
    Built from the per-sample shapes of those maps; owns the trainable :class:`HintRegressor`, so put its
    parameters in the optimizer (the harness does).
    """

    requires = ("student_features", "teacher_features")
    taps = "hint"

    def __init__(
        self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]
    ) -> None:
        super().__init__()
        for name, shapes in (("student_shapes", student_shapes), ("teacher_shapes", teacher_shapes)):
            if not isinstance(shapes, Sequence) or len(shapes) != 1:
                n = len(shapes) if isinstance(shapes, Sequence) else type(shapes).__name__
                raise ValueError(
                    f"FitNet reads one hint per network: {name} must list one (C, H, W) shape, got {n}; "
                    "set taps.student.hint / taps.teacher.hint to a single module path"
                )
        self.regressor = HintRegressor(student_shapes[0], teacher_shapes[0])

    def forward(
        self, student_logits: Tensor, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> Tensor:
        if len(student_features) != 1 or len(teacher_features) != 1:
            raise ValueError(
                f"FitNetLoss expects one student and one teacher hint map, got {len(student_features)} and "
                f"{len(teacher_features)}"
            )
        s = _check_map(student_features[0], "student_features[0]")
        if s.dim() != 4:
            raise ValueError(f"student_features[0] must be a (N, C, H, W) map, got {tuple(s.shape)}")
        # the regressor's own dtype (float32, or float64 under gradcheck); autocast still applies inside
        return fitnet_loss(self.regressor(s.to(self.regressor.bn.weight.dtype)), teacher_features[0])

    def extra_repr(self) -> str:
        return f"teacher_shape={self.regressor.out_shape}"
