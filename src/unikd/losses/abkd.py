"""ABKD (Wang, Yang, Wang, Wang, Xu and Huang, "ABKD: Pursuing a Proper Allocation of the Probability Mass in
Knowledge Distillation via alpha-beta-Divergence", ICML 2025, arXiv:2505.04560; official code
github.com/ghwang-s/abkd, ``standard_classification/distiller_zoo/abkl.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_finite, check_logits, check_pair, check_positive, nan_if_nonfinite


def abkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    temperature: float = 4.0,
) -> Tensor:
    """The alpha-beta divergence ``D(p || q)`` between ``p = softmax(z_t/T)`` and ``q = softmax(z_s/T)``,
    summed over classes and averaged over the batch (no ``T**2`` factor, as in the authors' code).

    General case (alpha, beta and alpha + beta non-zero)::

        D = -1/(alpha*beta) * sum_c [ p^alpha q^beta - alpha/(alpha+beta) p^(alpha+beta)
                                      - beta/(alpha+beta) q^(alpha+beta) ]

    The boundary cases are the authors' code's branches. Each is a multiple of the general case's continuous
    limit there: alpha times it for beta = 0 and for alpha + beta = 0, beta times it for alpha = 0, once for
    alpha = beta = 0; so they agree with the limit only where that factor is 1:

    - beta = 0: ``1/alpha * sum p^alpha log(p^alpha / q^alpha) - p^alpha + q^alpha`` (alpha=1: forward KL);
    - alpha = 0: ``1/beta * sum q^beta log(q^beta / p^beta) - q^beta + p^beta`` (beta=1: reverse KL);
    - alpha = beta = 0: ``1/2 * sum (log q - log p)^2``;
    - alpha + beta = 0: ``sum 1/alpha * (log(q^alpha / p^alpha) + (p/q)^alpha - 1)`` (negative for
      alpha < 0).

    Powers are taken in log space, ``p^a q^b = exp(a log p + b log q)``: the same value as the authors'
    ``pow(softmax)``, but with finite gradients where a probability underflows to 0 (there ``pow`` with an
    exponent below 1 has an infinite derivative). Negative exponents can still overflow for tiny
    probabilities. The authors' masking of infinite logits (for padded vocabularies) is not needed here:
    logits must be finite.

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        alpha, beta: the divergence's exponents (default 0.5 and 0.5, the authors' defaults). Their CIFAR-100
            example (ResNet56 -> ResNet20) uses alpha = 0.8, beta = 0.3 with loss weight 32 and CE weight 1.
        temperature: T > 0 (default 4, the authors' ``--kd_T`` default).
    """
    a, b = check_finite(alpha, "alpha"), check_finite(beta, "beta")
    t = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    lq = (zs / t).log_softmax(dim=1)  # (N, C) student log-probabilities
    lp = (zt / t).log_softmax(dim=1)  # (N, C) teacher log-probabilities
    n = zs.shape[0]
    if a == 0.0 and b == 0.0:
        per_class = 0.5 * (lq - lp).square()
    elif a == 0.0:
        q_b, p_b = (b * lq).exp(), (b * lp).exp()
        per_class = (q_b * (b * (lq - lp)) - q_b + p_b) / b
    elif b == 0.0:
        p_a, q_a = (a * lp).exp(), (a * lq).exp()
        per_class = (p_a * (a * (lp - lq)) - p_a + q_a) / a
    elif a + b == 0.0:
        per_class = (a * (lq - lp) + torch.exp(a * (lp - lq)) - 1.0) / a
    else:
        s = a + b
        cross = (a * lp + b * lq).exp()  # p^alpha q^beta
        per_class = -(cross - (a / s) * (s * lp).exp() - (b / s) * (s * lq).exp()) / (a * b)
    return nan_if_nonfinite(per_class.sum() / n, zs, zt)  # NaN for non-finite logits (docs/losses.md)


class ABKDLoss(nn.Module):
    """Module form of :func:`abkd_loss`, called as ``loss(student_logits, teacher_logits, target=None)``."""

    requires = ("teacher_logits",)

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.5, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha = check_finite(alpha, "alpha")
        self.beta = check_finite(beta, "beta")
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        # ``target`` is accepted so the harness can call every teacher loss alike; ABKD does not use it.
        return abkd_loss(
            student_logits, teacher_logits, alpha=self.alpha, beta=self.beta, temperature=self.temperature
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"
