"""Own re-implementations of the CIFAR-100 benchmark code's FitNet and AT computations, for parity tests.

They follow megvii-research/mdistiller at commit a08d46f10d6102bd6e3f258ca5ac880b020ea259:

- ``mdistiller/distillers/AT.py`` (``single_stage_at_loss`` / ``at_loss``): per stage, when the student's
  map height exceeds the teacher's the student map is adaptive-average-pooled to the teacher's (H, H), and
  the other way round; the attention is ``F.normalize`` (L2, eps 1e-12) of the channel mean of ``f**p``
  flattened per sample; the stage loss is the mean of the squared difference over batch and positions; the
  stage losses are summed (``zip`` over the two lists).
- ``mdistiller/distillers/FitNet.py`` with ``ConvReg`` from ``mdistiller/distillers/_common.py``: the
  regressor is a convolution picked from the (student, teacher) heights -- 3x3 stride 2 padding 1 when
  ``s_H == 2 t_H``, a 4x4 stride-2 padding-1 transposed convolution when ``2 s_H == t_H``, else a
  ``(1 + s_H - t_H, 1 + s_W - t_W)`` convolution when ``s_H >= t_H`` -- followed by BatchNorm2d (training
  mode in the distiller) and ReLU; the loss is ``F.mse_loss`` (mean) of the regressed student hint and the
  teacher hint.

Written with functional ops and explicit parameters (no code copied), so the parity tests can feed the same
weights into both implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mdistiller_at_loss(student_feats, teacher_feats, p):
    total = torch.zeros((), dtype=student_feats[0].dtype)
    for f_s, f_t in zip(student_feats, teacher_feats):
        h_s, h_t = f_s.shape[2], f_t.shape[2]
        if h_s > h_t:
            f_s = F.adaptive_avg_pool2d(f_s, (h_t, h_t))
        elif h_s < h_t:
            f_t = F.adaptive_avg_pool2d(f_t, (h_s, h_s))
        q_s = F.normalize(f_s.pow(p).mean(1).reshape(f_s.shape[0], -1))
        q_t = F.normalize(f_t.pow(p).mean(1).reshape(f_t.shape[0], -1))
        total = total + (q_s - q_t).pow(2).mean()
    return total


def convreg_rule(student_shape, teacher_shape):
    """(kind, kernel, stride, padding) of the benchmark's ConvReg for per-sample (C, H, W) shapes."""
    _, s_h, s_w = student_shape
    _, t_h, t_w = teacher_shape
    if s_h == 2 * t_h:
        return "conv", (3, 3), 2, 1
    if s_h * 2 == t_h:
        return "transposed", (4, 4), 2, 1
    if s_h >= t_h:
        return "conv", (1 + s_h - t_h, 1 + s_w - t_w), 1, 0
    raise NotImplementedError(f"student size {s_h}, teacher size {t_h}")


def mdistiller_fitnet_loss(student_hint, teacher_hint, params, rule):
    """``mse(relu(bn_train(conv(student_hint))), teacher_hint)`` with explicit regressor ``params``
    (conv_weight, conv_bias, bn_weight, bn_bias, running_mean, running_var; the running stats are updated
    in place, as BatchNorm2d in training mode)."""
    kind, _, stride, padding = rule
    if kind == "conv":
        x = F.conv2d(student_hint, params["conv_weight"], params["conv_bias"], stride=stride, padding=padding)
    else:
        x = F.conv_transpose2d(
            student_hint, params["conv_weight"], params["conv_bias"], stride=stride, padding=padding
        )
    x = F.batch_norm(
        x,
        params["running_mean"],
        params["running_var"],
        params["bn_weight"],
        params["bn_bias"],
        training=True,
        momentum=0.1,
        eps=1e-5,
    )
    return F.mse_loss(F.relu(x), teacher_hint)
