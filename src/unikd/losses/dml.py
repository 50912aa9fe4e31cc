"""Deep mutual learning, DML (Zhang, Xiang, Hospedales and Lu, "Deep Mutual Learning", CVPR 2018,
arXiv:1706.00384; official TensorFlow code github.com/YingZhangDUT/Deep-Mutual-Learning).

Online distillation: every network of a cohort is trained with its cross-entropy plus the KL divergence from
each other network's prediction to its own. In unikd the other network's logits arrive as
``teacher_logits`` (online training, ``online.peers``; docs/training.md), detached, so each network only
receives the gradient of its own objective. With several other networks the engine averages the term over
them, which is the paper's ``1/(K-1) sum_{l != k}`` (eq. 10).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._common import check_logits, check_pair, check_positive, nan_if_nonfinite


def dml_loss(student_logits: Tensor, peer_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """``KL(p_peer || p_self) * T**2`` with ``p = softmax(z / T)``, summed over classes, batch mean.

    The paper's mimicry loss ``D_KL(p_2 || p_1)`` for network 1 (eq. 2) has no temperature: the default
    ``T = 1`` is DML itself (the factor ``T**2`` is then 1). The official code computes
    ``mean_n sum_c p2 * log(1e-8 + p2 / (p1 + 1e-8))`` from softmaxes; this function uses log-softmaxes
    instead (no eps guard, finite for any finite logits): without the guard the two are equal to rounding,
    with it they differ by ~1e-5 relative while every probability is above 1e-4, and more where the network
    gives a class less than ~1e-6 (the guard bounds that log-ratio; tests/losses/test_dml.py).

    Args:
        student_logits: ``(N, C)`` logits of the network being trained (computed in float32).
        peer_logits: ``(N, C)`` logits of the other network for the same images; detached here, so no
            gradient reaches the peer through this term.
        temperature: T > 0.

    Returns:
        0-dim float32 tensor; the cross-entropy is not included.
    """
    t = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    zp = check_logits(peer_logits, "peer_logits").detach()
    check_pair(zs, zp, "peer_logits")
    log_s = (zs / t).log_softmax(dim=1)  # (N, C)
    log_p = (zp / t).log_softmax(dim=1)  # (N, C)
    kl = (log_p.exp() * (log_p - log_s)).sum(dim=1)  # (N,) KL(p_peer || p_self) per sample
    return nan_if_nonfinite(kl.mean() * (t * t), zs, zp)  # NaN for non-finite logits (docs/losses.md)


class DMLLoss(nn.Module):
    """Module form of :func:`dml_loss`: ``loss(student_logits, teacher_logits)``, the other network's logits
    arriving as ``teacher_logits`` (online training) or a fixed teacher's (then it is KD at ``T``)."""

    requires = ("teacher_logits",)

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return dml_loss(student_logits, teacher_logits, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
