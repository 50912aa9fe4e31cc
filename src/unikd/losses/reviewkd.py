"""ReviewKD (Chen, Liu, Zhao and Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021,
arXiv:2104.09044): attention-based fusion (ABF) of the student's stages, deepest first, matched to the
teacher's stages with the hierarchical context loss (HCL). Checked against megvii-research/mdistiller
``mdistiller/distillers/ReviewKD.py``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import nan_if_nonfinite
from ._features import check_count, check_feature, check_feature_list, check_shapes, common_dtype

# Pyramid levels of HCL after the full-resolution term, each weighted half the previous one.
_HCL_LEVELS = (4, 2, 1)


def hcl_loss(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
    """Hierarchical context loss: ``sum_levels [sum_j w_j MSE(pool_j(s), pool_j(t))] / sum_j w_j``.

    For each pair of ``(N, C, H, W)`` maps the terms are the full-resolution MSE (w = 1) and the MSEs after
    adaptive average pooling to 4x4, 2x2 and 1x1 (w = 1/2, 1/4, 1/8), skipping the pool sizes >= H; MSE is
    the element mean. Matches mdistiller's ``hcl_loss``. The teacher side is detached.

    Args:
        student_feats, teacher_feats: lists of equal-shaped ``(N, C, H, W)`` tensors (fused student maps and
            teacher stage outputs).
    """
    fs = check_feature_list(student_feats, "student_feats")
    ft = check_feature_list(teacher_feats, "teacher_feats")
    if len(fs) != len(ft):
        raise ValueError(f"student_feats has {len(fs)} maps but teacher_feats {len(ft)}; they must pair up")
    total = None
    for i, (s, t) in enumerate(zip(fs, ft)):
        s = check_feature(s, f"student_feats[{i}]", dims=(4,))
        t = check_feature(t, f"teacher_feats[{i}]", dims=(4,)).detach()
        if s.shape != t.shape or s.device != t.device:
            raise ValueError(
                f"student_feats[{i}] {tuple(s.shape)} and teacher_feats[{i}] {tuple(t.shape)} must have the "
                "same shape and device"
            )
        dt = common_dtype(s, t)
        s, t = s.to(dt), t.to(dt)
        loss = F.mse_loss(s, t)
        weight, weight_sum = 1.0, 1.0
        for size in _HCL_LEVELS:
            if size >= s.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size))
            weight_sum += weight
        total = loss / weight_sum if total is None else total + loss / weight_sum
    # every element reaches an MSE, so non-finite maps make the total inf or NaN: NaN either way (losses.md)
    return nan_if_nonfinite(total)


class ABF(nn.Module):
    """Attention-based fusion: a 1x1 conv of the student map, fused with the (upsampled) output of the deeper
    level through two sigmoid attention maps, resized to the teacher's size and mapped by a 3x3 conv to the
    teacher's channels. Returns ``(output for the loss, fused map passed to the next shallower level)``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False), nn.BatchNorm2d(mid_channels)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.att_conv = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        )
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self, x: Tensor, residual: Tensor | None, size: tuple[int, int], out_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)  # (N, mid, H, W)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("a fusing ABF needs the deeper level's output")
            residual = F.interpolate(residual, size, mode="nearest")  # (N, mid, H, W)
            att = self.att_conv(torch.cat([x, residual], dim=1))  # (N, 2, H, W)
            x = x * att[:, :1] + residual * att[:, 1:]
        if tuple(x.shape[-2:]) != out_size:
            x = F.interpolate(x, out_size, mode="nearest")  # to the teacher's spatial size
        return self.conv2(x), x


class ReviewKDLoss(nn.Module):
    """ReviewKD: ABF fusion of the student's stage outputs plus its pooled embedding, and :func:`hcl_loss`
    against the teacher's stage outputs plus its pooled embedding.

    Built from the shapes measured at start-up: ``student_shapes`` / ``teacher_shapes`` are the per-sample
    ``(C, H, W)`` of the stage outputs (tap kind ``"stages"``, same count for both networks), and
    ``in_features`` / ``teacher_in_features`` the pooled widths (the extra deepest 1x1 level). The middle
    width is ``min(max_mid_channels, in_features)``. For resnet8x4 <- resnet32x4 this gives mdistiller's
    configuration (in/out channels 64, 128, 256, 256; shapes 1, 8, 16, 32; middle width 256).

    The ABF modules (with BatchNorm) are trainable state of this module; their BatchNorm uses batch
    statistics in training mode. mdistiller reads the teacher's *pre-activation* stage outputs; the taps
    decide which tensors arrive here. mdistiller's weight 5.0 with a 20-epoch linear warm-up belongs in the
    config.
    """

    requires = ("student_features", "teacher_features", "student_embedding", "teacher_embedding")
    taps = "stages"

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        in_features: int,
        teacher_in_features: int,
        *,
        max_mid_channels: int = 512,
    ) -> None:
        super().__init__()
        ss = check_shapes(student_shapes, "student_shapes", rank=3)
        ts = check_shapes(teacher_shapes, "teacher_shapes", rank=3)
        if len(ss) != len(ts):
            raise ValueError(
                f"student_shapes has {len(ss)} stages but teacher_shapes {len(ts)}; ReviewKD pairs the "
                "stages one to one (choose taps with the same count)"
            )
        check_count(in_features, "in_features")
        check_count(teacher_in_features, "teacher_in_features")
        self.max_mid_channels = check_count(max_mid_channels, "max_mid_channels")
        in_channels = [s[0] for s in ss] + [in_features]
        out_channels = [t[0] for t in ts] + [teacher_in_features]
        mid = min(self.max_mid_channels, in_channels[-1])
        last = len(in_channels) - 1
        abfs = [
            ABF(c_in, mid, c_out, i < last) for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels))
        ]
        self.abfs = nn.ModuleList(abfs[::-1])  # deepest (pooled) level first
        # Spatial sizes, deepest first: the student's (where the residual is upsampled to) and the teacher's.
        self.sizes = [(1, 1)] + [(s[1], s[2]) for s in reversed(ss)]
        self.out_sizes = [(1, 1)] + [(t[1], t[2]) for t in reversed(ts)]
        self.student_shapes, self.teacher_shapes = ss, ts
        self.widths = (in_features, teacher_in_features)

    def forward(
        self,
        student_logits: Tensor,
        student_features: Sequence[Tensor],
        teacher_features: Sequence[Tensor],
        student_embedding: Tensor,
        teacher_embedding: Tensor,
    ) -> Tensor:
        fs = check_feature_list(student_features, "student_features")
        ft = check_feature_list(teacher_features, "teacher_features")
        self._check_inputs(fs, self.student_shapes, student_embedding, self.widths[0], "student")
        self._check_inputs(ft, self.teacher_shapes, teacher_embedding, self.widths[1], "teacher")
        dt = self.abfs[0].conv1[0].weight.dtype
        xs = [f.to(dt) for f in fs] + [student_embedding.to(dt)[:, :, None, None]]
        xs = xs[::-1]  # deepest first
        out, residual = self.abfs[0](xs[0], None, self.sizes[0], self.out_sizes[0])
        outs = [out]
        for x, abf, size, out_size in zip(xs[1:], self.abfs[1:], self.sizes[1:], self.out_sizes[1:]):
            out, residual = abf(x, residual, size, out_size)
            outs.insert(0, out)
        targets = [f.detach() for f in ft] + [teacher_embedding.detach()[:, :, None, None]]
        return hcl_loss(outs, targets)

    @staticmethod
    def _check_inputs(
        feats: list[Tensor], shapes: list[tuple[int, ...]], emb: Tensor, width: int, who: str
    ) -> None:
        got = [tuple(f.shape[1:]) if isinstance(f, Tensor) else type(f).__name__ for f in feats]
        if got != shapes:
            raise ValueError(
                f"{who}_features have per-sample shapes {got} but this ReviewKDLoss was built for {shapes}; "
                "build it from the shapes of the same taps and input size"
            )
        if not isinstance(emb, Tensor) or emb.shape != (feats[0].shape[0], width):
            shape = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
            raise ValueError(
                f"{who}_embedding must be (N, {width}) for the same batch as the features, got {shape}"
            )

    def extra_repr(self) -> str:
        return f"student_shapes={self.student_shapes}, teacher_shapes={self.teacher_shapes}"
