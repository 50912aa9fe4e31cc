"""Logit standardization (Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge Distillation",
CVPR 2024, arXiv:2403.01427; official code github.com/sunshangquan/logit-standardization-KD).

A per-sample z-score of the logits, applied to student and teacher before the temperature. The loss then no
longer asks the student to match the teacher's logit range and scale, only their relations; every loss built
on it is invariant to a per-row shift *and* a positive per-row scale of either set of logits.
"""

from __future__ import annotations

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
    standardizing.
    """
    mean = logits.mean(dim=1, keepdim=True)  # (N, 1)
    centred = logits - mean  # (N, C)
    var = centred.square().sum(dim=1, keepdim=True) / (logits.shape[1] - 1)  # (N, 1), unbiased
    std = var.clamp_min(1.1754944e-38).sqrt()  # float32 tiny: keeps sqrt's backward finite at var == 0
    return centred / (eps + std)


def check_flag(value: object, name: str) -> bool:
    """A real ``bool`` (a YAML ``true`` / ``false``), not a truthy string such as ``"false"``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value
