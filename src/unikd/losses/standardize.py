"""Logit standardization (Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge Distillation",
CVPR 2024, arXiv:2403.01427; official code github.com/sunshangquan/logit-standardization-KD).

A per-sample z-score of the logits, applied to student and teacher before the temperature. The loss then no
longer asks the student to match the teacher's logit range and scale, only their relations; every loss built
on it is invariant to a per-row shift *and* a positive per-row scale of either set of logits.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The authors' ``normalize``: (z - mean) / (1e-7 + std), eps added to the std, not inside the square root.
STANDARDIZE_EPS = 1e-7


def standardize_logits(logits: Tensor, eps: float = STANDARDIZE_EPS) -> Tensor:
    """``(z - mean(z)) / (eps + std(z))`` per row of ``(N, C)`` logits, with the unbiased std (divisor C - 1).

    This is the authors' ``normalize`` in ``mdistiller/distillers/KD.py`` (``logit.std`` is torch's default,
    unbiased). One deliberate difference at a degenerate point: a row whose logits are all equal (e.g. a
    zero-initialised classifier) has std 0, where torch's ``std`` backward returns NaN; here the variance is
    clamped at float32's smallest normal number, so the value is the same (0) and the gradient stays finite.
    It is then ~1/eps = 1e7 times the loss gradient, so do not zero-initialise a student's classifier when
    standardizing. The gradient is built analytically (one saved ``(N, C)`` tensor; no double backward).
    """
    if not logits.requires_grad:
        return _zscore(logits, eps)[0]
    return _Standardize.apply(logits, eps)


def _zscore(z: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, d, s)``: the z-scores ``(N, C)``, ``d = eps + s`` and the clamped std ``s``, both ``(N, 1)``."""
    centred = z - z.mean(dim=1, keepdim=True)  # (N, C)
    var = centred.square().sum(dim=1, keepdim=True) / (z.shape[1] - 1)  # (N, 1), unbiased
    s = var.clamp_min(_TINY).sqrt()  # float32 tiny keeps the gradient finite where var == 0
    d = s + eps
    return centred.div_(d), d, s


_TINY = 1.1754944e-38


class _Standardize(torch.autograd.Function):
    """y = c / d with c = z - mean(z), d = eps + s, s = sqrt(sum(c^2) / (C - 1)). For an upstream gradient g:
    dL/dz = (g - mean(g) - <g, y> * y * d / ((C - 1) * s)) / d (the last term vanishes where var was clamped,
    since y = 0 there)."""

    @staticmethod
    def forward(ctx, z: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        y, d, s = _zscore(z, eps)
        ctx.save_for_backward(y, d, s)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        y, d, s = ctx.saved_tensors
        c = y.shape[1]
        gy = (g * y).sum(dim=1, keepdim=True)  # (N, 1)
        coef = gy * d / ((c - 1) * s)  # (N, 1)
        grad = g - g.mean(dim=1, keepdim=True) - coef * y  # (N, C)
        return grad.div_(d), None


def check_flag(value: object, name: str) -> bool:
    """A real ``bool`` (a YAML ``true`` / ``false``), not a truthy string such as ``"false"``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value
