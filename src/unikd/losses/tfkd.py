"""Teacher-free KD with a manually designed virtual teacher, Tf-KD_reg (Yuan, Tay, Li, Wang and Feng,
"Revisiting Knowledge Distillation via Label Smoothing Regularization", CVPR 2020; official code
github.com/yuanli2333/Teacher-free-Knowledge-Distillation, function ``loss_kd_regularization``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_logits, check_positive, nan_if_nonfinite, parse_target


def tfkd_loss(
    student_logits: Tensor, target: Tensor, *, correct_prob: float = 0.99, temperature: float = 20.0
) -> Tensor:
    """``KL(q || softmax(z_s))`` summed over classes and averaged over the batch, with the virtual
    teacher ``q = softmax(p^d / T)``, ``p^d_i = a`` on the target and ``(1 - a)/(C - 1)`` elsewhere
    (a = correct_prob).

    This follows the authors' code: the temperature divides the virtual teacher's *probabilities* before a
    softmax (with the CIFAR-100 defaults q is almost uniform: q_t ~= 0.0105 for C = 100), the student is not
    softened, and there is no ``T**2`` factor. The code's ``nn.KLDivLoss()`` averages over all N*C entries
    and multiplies by ``multiplier`` (100 for ResNet18 on CIFAR-100, i.e. C), which equals the per-sample
    sum returned here. The code's ``(1 - reg_alpha) * CE + reg_alpha * KL`` mixing is the caller's job
    (``loss.ce_weight`` / ``loss.weight``; their ResNet18 CIFAR-100 config uses reg_alpha = 0.1, the
    MobileNetV2 one 0.95 with T = 40 and multiplier 1).

    Args:
        student_logits: ``(N, C)``.
        target: int64 ``(N,)`` indices, or float ``(N, C)`` soft labels V, for which the virtual teacher is
            the same mixture of per-class teachers, ``p^d = a V + (1 - a)/(C - 1) (1 - V)``.
        correct_prob: a in (0, 1); default 0.99 (hard-coded in the authors' code).
        temperature: T > 0; default 20 (``reg_temperature`` of their CIFAR-100 ResNet18 config).
    """
    a = check_positive(correct_prob, "correct_prob")
    if a >= 1.0:
        raise ValueError(f"correct_prob must lie in (0, 1), got {correct_prob!r}")
    t = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    n, c = zs.shape
    tg = parse_target(target, n, c, device=zs.device)
    off = (1.0 - a) / (c - 1)
    with torch.no_grad():
        if tg.soft is None:
            pd = torch.full((n, c), off, device=zs.device, dtype=zs.dtype).scatter_(1, tg.index, a)
        else:
            pd = tg.soft.to(zs.dtype) * (a - off) + off
        log_q = (pd / t).log_softmax(dim=1)  # (N, C) virtual teacher, log-probabilities
    log_s = zs.log_softmax(dim=1)
    loss = torch.nn.functional.kl_div(log_s, log_q, reduction="batchmean", log_target=True)
    return nan_if_nonfinite(loss, zs, tg.soft)  # NaN for non-finite logits (docs/losses.md)


class TfKDLoss(nn.Module):
    """Module form of :func:`tfkd_loss`, called as ``loss(student_logits, target)``."""

    requires = ("target",)

    def __init__(self, *, correct_prob: float = 0.99, temperature: float = 20.0) -> None:
        super().__init__()
        if check_positive(correct_prob, "correct_prob") >= 1.0:
            raise ValueError(f"correct_prob must lie in (0, 1), got {correct_prob!r}")
        self.correct_prob = float(correct_prob)
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: Tensor, target: Tensor) -> Tensor:
        return tfkd_loss(student_logits, target, correct_prob=self.correct_prob, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"correct_prob={self.correct_prob}, temperature={self.temperature}"
