"""DIST (Huang, You, Wang, Qian and Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022,
arXiv:2205.10536; official code github.com/hunto/DIST_KD, loss in its ``classification`` submodule
github.com/hunto/image_classification_sota ``lib/models/losses/dist_kd.py``)."""

from __future__ import annotations

from torch import Tensor, nn

from ._common import check_logits, check_pair, check_positive, check_weight, nan_if_nonfinite

# The authors' eps, added to the product of the two norms (not to each norm, not inside a square root).
DIST_EPS = 1e-8


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    """``beta * tau**2 * (1 - inter) + gamma * tau**2 * (1 - intra)`` on ``softmax(z / tau)``.

    ``inter`` is the mean over the N samples of the Pearson correlation between the student's and the
    teacher's class distributions of that sample (a row); ``intra`` is the mean over the C classes of the
    Pearson correlation between the student's and the teacher's probabilities of that class across the
    batch (a column). Each correlation is ``<a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8)``,
    as in the authors' code.

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        beta, gamma: weights of the inter- and intra-class terms, >= 0 (default 1 and 1, as published).
        temperature: tau > 0. Default 1.0 (the authors' ImageNet setting ``kd: dist``); their CIFAR-100
            recipe uses ``dist_t4`` (tau = 4) with KD weight 2 and CE weight 1.

    The intra-class term is a batch statistic: the loss is a batch *mean* only for its inter-class part, and
    it depends on which samples share a batch. With N = 1 the centred column is zero, so that term is the
    constant ``gamma * tau**2`` and gives no gradient (as in the authors' code).
    """
    b, g = check_weight(beta, "beta"), check_weight(gamma, "gamma")
    tau = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    ys = (zs / tau).softmax(dim=1)  # (N, C)
    yt = (zt / tau).softmax(dim=1)  # (N, C)
    inter = 1.0 - _pearson(ys, yt, dim=1).mean()  # correlation of each row, mean over N
    intra = 1.0 - _pearson(ys, yt, dim=0).mean()  # correlation of each column, mean over C
    # NaN for non-finite logits (docs/losses.md)
    return nan_if_nonfinite((tau * tau) * (b * inter + g * intra), zs, zt)


def _pearson(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``: ``(N,)`` for dim=1, ``(C,)`` for dim=0."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return (a * b).sum(dim=dim) / (a.norm(dim=dim) * b.norm(dim=dim) + DIST_EPS)


class DISTLoss(nn.Module):
    """Module form of :func:`dist_loss`, called as ``loss(student_logits, teacher_logits, target=None)``."""

    requires = ("teacher_logits",)

    def __init__(self, *, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        self.beta = check_weight(beta, "beta")
        self.gamma = check_weight(gamma, "gamma")
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        # ``target`` is accepted so the harness can call every teacher loss alike; DIST does not use it.
        return dist_loss(
            student_logits, teacher_logits, beta=self.beta, gamma=self.gamma, temperature=self.temperature
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"
