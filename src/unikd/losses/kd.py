"""Classic knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
NIPS 2014 Deep Learning Workshop, arXiv:1503.02531), optionally on standardized logits (Sun et al., CVPR
2024)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_logits, check_pair, check_positive, nan_if_nonfinite
from .standardize import check_flag, standardize_logits


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 4.0, standardize: bool = False
) -> Tensor:
    """``KL(softmax(z_t/T) || softmax(z_s/T)) * T**2``, summed over classes, averaged over the batch.

    Args:
        student_logits: ``(N, C)`` student logits (float32/bf16/fp16; computed in float32).
        teacher_logits: ``(N, C)`` teacher logits; detached (no gradient reaches the teacher).
        temperature: T > 0. Default 4.0 (the CIFAR-100 setting of the DKD/CRD benchmarks).
        standardize: z-score both logits per sample before the temperature (logit standardization, see
            :func:`~unikd.losses.standardize.standardize_logits`); the authors' CIFAR-100 setting is then
            T=2 with CE weight 0.1 and KD weight 9.

    Returns:
        0-dim float32 tensor. The ordinary cross-entropy is not included. KD needs no label, so soft labels
        (mixup/cutmix) change nothing here; :class:`KDLoss` accepts and ignores ``target``.
    """
    t = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    if check_flag(standardize, "standardize"):
        zs, zt = standardize_logits(zs), standardize_logits(zt)
    loss = kd_kernel(zs, zt, temperature=t, denom=zs.shape[0])
    return nan_if_nonfinite(loss, zs, zt)  # NaN for non-finite logits (docs/losses.md)


def kd_kernel(zs: Tensor, zt: Tensor, *, temperature: float, denom: float) -> Tensor:
    """The KD sum over the rows of validated ``(N, C)`` float32/float64 logits, divided by ``denom``.

    Shared by :func:`kd_loss` (``denom`` = N) and the token-level forms in :mod:`unikd.token`, which call it
    on the kept tokens or on one chunk of them (``denom`` = all kept tokens). The teacher must be detached.
    """
    t = temperature
    if t != 1.0:  # skip two (N, C) copies at T = 1, the usual language-model setting
        zs, zt = zs / t, zt / t
    log_s = zs.log_softmax(dim=1)  # (N, C)
    log_t = zt.log_softmax(dim=1)  # (N, C)
    return F.kl_div(log_s, log_t, reduction="sum", log_target=True) * (t * t / denom)


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss`, called as ``loss(student_logits, teacher_logits, target=None)``."""

    requires = ("teacher_logits", "target")

    def __init__(self, *, temperature: float = 4.0, standardize: bool = False) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.standardize = check_flag(standardize, "standardize")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        # ``target`` is accepted so the harness can call every teacher loss the same way; KD does not use it.
        return kd_loss(
            student_logits, teacher_logits, temperature=self.temperature, standardize=self.standardize
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, standardize={self.standardize}"
