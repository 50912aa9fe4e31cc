"""Probabilistic knowledge transfer, PKT (Passalis and Tefas, "Learning Deep Representations with
Probabilistic Knowledge Transfer", ECCV 2018, arXiv:1803.10837; authors' code
github.com/passalis/probabilistic_kt, reused by RepDistiller and mdistiller)."""

from __future__ import annotations

from torch import Tensor, nn

from ._common import nan_if_nonfinite
from ._features import check_embedding, check_same_batch, common_dtype

# The authors' code adds this to the norms and inside the logarithm.
_EPS = 1e-7


def _conditional(x: Tensor) -> Tensor:
    """``(N, N)`` rows ``p_{j|i} = K(x_i, x_j) / sum_k K(x_i, x_k)``, cosine kernel ``(cos + 1) / 2``."""
    x = x / (x.norm(dim=1, keepdim=True) + _EPS)
    k = (x @ x.t() + 1.0) / 2.0  # (N, N), diagonal included
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """``mean_{i,j} p_{j|i} log((p_{j|i} + eps) / (q_{j|i} + eps))``, eps = 1e-7.

    p (teacher, detached) and q (student) are the row-normalised cosine-kernel affinities of the batch,
    ``K(a, b) = (cos(a, b) + 1) / 2``, the vectors first divided by ``norm + eps``. As in the authors' code
    (and RepDistiller / mdistiller ``distillers/PKT.py``), the kernel keeps the diagonal ``K(x_i, x_i)`` and
    the sum is divided by N^2 (``torch.mean``), i.e. the paper's KL divergence averaged over all N^2 entries.

    Args:
        student_emb, teacher_emb: ``(N, D_s)`` / ``(N, D_t)``; the widths may differ.
    """
    s = check_embedding(student_emb, "student_emb")
    t = check_embedding(teacher_emb, "teacher_emb").detach()
    check_same_batch(s, t, "student_emb", "teacher_emb")
    dt = common_dtype(s, t)
    q = _conditional(s.to(dt))
    p = _conditional(t.to(dt))
    # NaN for non-finite embeddings, which the normalisation could turn into finite affinities (losses.md)
    return nan_if_nonfinite((p * ((p + _EPS) / (q + _EPS)).log()).mean(), s, t)


class PKTLoss(nn.Module):
    """Module form of :func:`pkt_loss` on the pooled pre-classifier embeddings (no hyper-parameters)."""

    requires = ("student_embedding", "teacher_embedding")

    def forward(self, student_logits: Tensor, student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
        return pkt_loss(student_embedding, teacher_embedding)
