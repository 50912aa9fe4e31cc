"""Relational knowledge distillation, RKD (Park, Kim, Lu and Cho, "Relational Knowledge Distillation",
CVPR 2019, arXiv:1904.05068): distance-wise and angle-wise relations between the samples of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_weight, nan_if_nonfinite
from ._features import check_embedding, check_same_batch, common_dtype

# Squared distances are clamped here before the square root (zero distances would give infinite gradients).
_EPS = 1e-12


def _normalised_distances(e: Tensor) -> Tensor:
    """``(N, N)`` Euclidean distances divided by their mean over the off-diagonal pairs; 0 on the diagonal."""
    sq = e.square().sum(dim=1)  # (N,)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (e @ e.t())).clamp(min=_EPS).sqrt()  # (N, N)
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    d = d.masked_fill(eye, 0.0)
    # Every off-diagonal entry is >= sqrt(eps) > 0 and the diagonal is 0, so this is the mean over the
    # N(N-1) ordered pairs (a sum, not d[~eye].mean(): boolean indexing would cost a host sync).
    n = e.shape[0]
    return d / (d.sum() / (n * (n - 1)))


def _angles(e: Tensor) -> Tensor:
    """``(N, N, N)`` cosines ``<u_ij, u_ik>`` with ``u_ij`` the unit vector from e_i to e_j (0 when j = i)."""
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # (N, N, D): [i, j] = e_j - e_i
    u = F.normalize(diff, p=2, dim=2)
    return u @ u.transpose(1, 2)  # (N, N, N)


def rkd_loss(
    student_emb: Tensor,
    teacher_emb: Tensor,
    *,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """``distance_weight * L_D + angle_weight * L_A`` over all ordered pairs / triplets of the batch.

    - ``L_D = mean_{i,j} huber(psi_D(s)_ij - psi_D(t)_ij)`` with ``psi_D(x)_ij = ||x_i - x_j|| / mu``, mu the
      mean distance over the pairs i != j (computed per network).
    - ``L_A = mean_{i,j,k} huber(psi_A(s)_ijk - psi_A(t)_ijk)`` with ``psi_A(x)_ijk = <u_ij, u_ik>``,
      ``u_ij = (x_j - x_i) / ||x_j - x_i||`` (0 when j = i), the cosine of the angle at x_i.
    - ``huber`` is the smooth L1 with delta 1.

    The means run over all N^2 pairs and N^3 triplets, degenerate ones (i = j, i = k) included: they
    contribute zero but count, as in mdistiller / RepDistiller (``distillers/RKD.py``, ``F.smooth_l1_loss``
    means), whose defaults 25 and 50 are ours. Squared distances are clamped at 1e-12 before the square
    root and difference vectors divided by ``max(norm, 1e-12)`` (``F.normalize``), as there. The teacher
    side is detached.

    Args:
        student_emb, teacher_emb: ``(N, D_s)`` / ``(N, D_t)``, N >= 2 (flattened if higher-dimensional
            tensors are wanted: pass ``x.flatten(1)``).
        distance_weight, angle_weight: the paper's lambda_D and lambda_A, >= 0.

    Memory is O(N^2 D + N^3) (the difference vectors of every pair).
    """
    wd = check_weight(distance_weight, "distance_weight")
    wa = check_weight(angle_weight, "angle_weight")
    s = check_embedding(student_emb, "student_emb", min_rows=2)
    t = check_embedding(teacher_emb, "teacher_emb", min_rows=2).detach()
    check_same_batch(s, t, "student_emb", "teacher_emb")
    dt = common_dtype(s, t)
    s, t = s.to(dt), t.to(dt)
    with torch.no_grad():
        t_d = _normalised_distances(t)
        t_a = _angles(t)
    loss_d = F.smooth_l1_loss(_normalised_distances(s), t_d)
    loss_a = F.smooth_l1_loss(_angles(s), t_a)
    # a non-finite embedding can vanish from the relations (an inf norm scales its distances to 0): NaN
    return nan_if_nonfinite(wd * loss_d + wa * loss_a, s, t)  # (docs/losses.md)


class RKDLoss(nn.Module):
    """Module form of :func:`rkd_loss` on the pooled pre-classifier embeddings."""

    requires = ("student_embedding", "teacher_embedding")

    def __init__(self, *, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        self.distance_weight = check_weight(distance_weight, "distance_weight")
        self.angle_weight = check_weight(angle_weight, "angle_weight")

    def forward(self, student_logits: Tensor, student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
        return rkd_loss(
            student_embedding,
            teacher_embedding,
            distance_weight=self.distance_weight,
            angle_weight=self.angle_weight,
        )

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
