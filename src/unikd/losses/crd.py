"""Contrastive representation distillation, CRD (Tian, Krishnan and Isola, "Contrastive Representation
Distillation", ICLR 2020, arXiv:1910.10699; authors' code github.com/HobbitLong/RepDistiller ``crd/``,
reused by megvii-research/mdistiller ``mdistiller/distillers/CRD.py``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_positive, nan_if_nonfinite
from ._features import (
    check_count,
    check_embedding,
    check_indices,
    check_same_batch,
    check_unit_interval,
)

NEGATIVE_MODES = ("exact", "uniform")
# In the NCE posterior, as in the authors' code.
_EPS = 1e-7


def _scores(vec: Tensor, memory: Tensor, idx: Tensor) -> Tensor:
    """``(B, K+1)`` dot products ``<memory[idx[b, k]], vec[b]>``.

    When the bank is not much larger than the number of rows drawn, one ``(B, n)`` product is cheaper than
    gathering ``B (K+1)`` rows of the bank (which for CIFAR-100 would copy 0.5 GB per step); both give the
    same values up to summation order.
    """
    b, k1 = idx.shape
    if memory.shape[0] <= 4 * k1:
        return (vec @ memory.t()).gather(1, idx)  # (B, n) -> (B, K+1)
    rows = memory.index_select(0, idx.reshape(-1)).view(b, k1, memory.shape[1])  # (B, K+1, F)
    return torch.bmm(rows, vec.unsqueeze(2)).squeeze(2)


def _nce(out: Tensor, num_samples: int) -> Tensor:
    """NCE loss of ``(B, K+1)`` normalised scores, column 0 the positive, noise ``P_n = 1 / num_samples``."""
    c = (out.shape[1] - 1) / num_samples  # K * P_n
    pos, neg = out[:, 0], out[:, 1:]
    log_d1 = (pos / (pos + (c + _EPS))).log()  # (B,) log h(positive)
    log_d0 = (c / (neg + (c + _EPS))).log()  # (B, K) log (1 - h(negative))
    return -(log_d1.sum() + log_d0.sum()) / out.shape[0]


def crd_loss(
    student_vec: Tensor,
    teacher_vec: Tensor,
    student_memory: Tensor,
    teacher_memory: Tensor,
    contrast_idx: Tensor,
    normalisers: Tensor,
    *,
    temperature: float = 0.07,
) -> Tensor:
    """CRD's NCE objective for one batch, both directions: ``L(s; M_t) + L(t; M_s)``.

    With ``h(v, m) = exp(<m, v> / T) / Z`` and ``c = K / n`` (K negatives, n = bank size, uniform noise),
    ``L(v; M) = -(1/B) sum_b [log(h_0 / (h_0 + c + eps)) + sum_{k>=1} log(c / (h_k + c + eps))]`` where
    ``h_k = h(v_b, M[contrast_idx[b, k]])``; column 0 of ``contrast_idx`` is the positive (the sample's own
    row), eps = 1e-7. The student vector is scored against the teacher bank with ``Z = normalisers[0]`` and
    the teacher vector against the student bank with ``Z = normalisers[1]``, as ``ContrastMemory`` /
    ``ContrastLoss`` of RepDistiller and mdistiller (``out_v1`` / ``out_v2``, ``Z_v1`` / ``Z_v2``).

    Args:
        student_vec, teacher_vec: ``(B, F)`` L2-normalised embeddings (after the embedding heads).
        student_memory, teacher_memory: ``(n, F)`` memory banks (no gradient flows into them).
        contrast_idx: int64 ``(B, K+1)`` bank rows, the positive first.
        normalisers: ``(2,)`` the constants Z (student side, teacher side), > 0.
        temperature: T.
    """
    t = check_positive(temperature, "temperature")
    vs = check_embedding(student_vec, "student_vec")
    vt = check_embedding(teacher_vec, "teacher_vec")
    check_same_batch(vs, vt, "student_vec", "teacher_vec")
    if student_memory.shape != teacher_memory.shape or student_memory.dim() != 2:
        raise ValueError(
            f"student_memory {tuple(student_memory.shape)} and teacher_memory {tuple(teacher_memory.shape)} "
            "must both be (n, F)"
        )
    n, f = student_memory.shape
    if vs.shape[1] != f or vt.shape[1] != f:
        raise ValueError(f"the vectors must have the bank width F={f}, got {vs.shape[1]} and {vt.shape[1]}")
    if contrast_idx.dim() != 2 or contrast_idx.shape[0] != vs.shape[0] or contrast_idx.shape[1] < 2:
        raise ValueError(
            f"contrast_idx must have shape (B, K+1) = ({vs.shape[0]}, K+1) with K >= 1, got "
            f"{tuple(contrast_idx.shape)}"
        )
    out_s = (_scores(vs, teacher_memory.detach(), contrast_idx) / t).exp() / normalisers[0]
    out_t = (_scores(vt, student_memory.detach(), contrast_idx) / t).exp() / normalisers[1]
    # exp of a -inf score is 0 and its log -inf, so a non-finite vector or bank row would give +-inf: NaN
    return nan_if_nonfinite(_nce(out_s, n) + _nce(out_t, n), vs, vt)  # (docs/losses.md)


class CRDLoss(nn.Module):
    """CRD with its embedding heads, memory banks, momentum update and negative sampling.

    Call as ``loss(student_logits, student_embedding, teacher_embedding, indices)`` (pooled pre-classifier
    features and the batch's dataset indices). Each call draws ``num_negatives`` bank rows per sample,
    computes :func:`crd_loss`, then (in training mode) moves the rows of the batch's own indices toward the
    new vectors: ``m <- normalise(momentum * m + (1 - momentum) * v)``.

    Negatives (``negatives``):
        ``"exact"``: for each sample, ``num_negatives`` distinct samples of the *other* classes, uniformly
        (with replacement only when the other classes hold fewer samples), the ``mode="exact"`` sampling of
        RepDistiller / mdistiller's ``CIFAR100InstanceSample`` that produced the published numbers. Needs
        ``train_labels``. ``"uniform"``: any training samples, uniformly with replacement (their fallback when
        the loader gives no contrast indices). Draws use torch's global RNG on the embeddings' device, which
        a checkpoint restores, so resumed runs draw the same negatives.

    State: ``student_head`` / ``teacher_head`` (``nn.Linear`` to ``feat_dim``, trainable),
    ``memory_student`` / ``memory_teacher`` (``(num_samples, feat_dim)`` buffers, initialised uniform in
    ``+-1/sqrt(feat_dim/3)``) and ``normalisers`` (Z, set from the first batch: the mean score times n).
    Built in the same order as the reference code, so one seed gives the same initial state.

    Args:
        in_features, teacher_in_features: widths of the student / teacher embeddings.
        num_samples: training-set size (bank rows; dataset indices lie in ``[0, num_samples)``).
        train_labels: int64 ``(num_samples,)`` class of every training sample (for ``"exact"``).
        feat_dim: 128. num_negatives: K = 16384. temperature: 0.07. momentum: 0.5 (the published settings).
    """

    requires = ("student_embedding", "teacher_embedding", "indices")

    def __init__(
        self,
        in_features: int,
        teacher_in_features: int,
        num_samples: int,
        train_labels: Tensor | None = None,
        *,
        feat_dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        negatives: str = "exact",
    ) -> None:
        super().__init__()
        check_count(in_features, "in_features")
        check_count(teacher_in_features, "teacher_in_features")
        self.num_samples = check_count(num_samples, "num_samples", minimum=2)
        self.feat_dim = check_count(feat_dim, "feat_dim")
        self.num_negatives = check_count(num_negatives, "num_negatives")
        self.temperature = check_positive(temperature, "temperature")
        self.momentum = check_unit_interval(momentum, "momentum")
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
        self.negatives = negatives
        self.student_head = nn.Linear(in_features, feat_dim)
        self.teacher_head = nn.Linear(teacher_in_features, feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_student", torch.rand(num_samples, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_teacher", torch.rand(num_samples, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("normalisers", torch.full((2,), -1.0))
        self.register_buffer("train_labels", self._check_labels(train_labels), persistent=False)
        # Host-side facts kept so that a training step needs no host sync: whether every sample has at least
        # K samples of other classes (then one draw serves the whole batch), and whether Z is set (read once
        # from the buffer, again after load_state_dict).
        self._all_distinct = self.train_labels is not None and bool(
            self.num_samples - torch.bincount(self.train_labels).max() >= self.num_negatives
        )
        self._normalisers_set = False
        self.register_load_state_dict_post_hook(_forget_normalisers)

    def _check_labels(self, labels: Tensor | None) -> Tensor | None:
        if labels is None:
            if self.negatives == "exact":
                raise ValueError(
                    "negatives='exact' draws negatives from the other classes and needs train_labels, the "
                    "int64 (num_samples,) class of every training sample (the harness passes it); pass it, "
                    "or use negatives='uniform'"
                )
            return None
        labels = torch.as_tensor(labels)
        if labels.is_floating_point() or labels.shape != (self.num_samples,):
            raise ValueError(
                f"train_labels must be int64 class indices of shape (num_samples,) = ({self.num_samples},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        labels = labels.long()
        if bool((labels < 0).any()):
            raise ValueError("train_labels must be non-negative class indices")
        if bool((labels == labels[0]).all()) and self.negatives == "exact":
            raise ValueError(
                "train_labels hold a single class; exact negatives need samples of other classes"
            )
        return labels

    def sample(self, indices: Tensor) -> Tensor:
        """``(B, K+1)`` bank rows for a batch: its own ``indices`` first, then K negatives."""
        b, n, k = indices.shape[0], self.num_samples, self.num_negatives
        dev = indices.device
        if self.negatives == "uniform":
            neg = torch.randint(0, n, (b, k), device=dev)
        else:
            labels = self.train_labels
            other = labels.unsqueeze(0) != labels[indices].unsqueeze(1)  # (B, n) samples of other classes
            if self._all_distinct:  # the common case (the branch below with every row distinct), sync-free
                keys = torch.rand(b, n, device=dev).masked_fill_(~other, 2.0)
                neg = keys.topk(k, dim=1, largest=False, sorted=False).indices
                return torch.cat([indices.view(b, 1), neg], dim=1)
            pool = other.sum(dim=1)  # (B,)
            neg = torch.empty(b, k, dtype=torch.long, device=dev)
            distinct = pool >= k
            if bool(distinct.any()):
                # k smallest of iid uniform keys over the pool = a uniform k-subset without replacement.
                keys = torch.rand(int(distinct.sum()), n, device=dev).masked_fill_(~other[distinct], 2.0)
                neg[distinct] = keys.topk(k, dim=1, largest=False, sorted=False).indices
            if not bool(distinct.all()):
                neg[~distinct] = torch.multinomial(other[~distinct].float(), k, replacement=True)
        return torch.cat([indices.view(b, 1), neg], dim=1)

    def forward(
        self,
        student_logits: Tensor,
        student_embedding: Tensor,
        teacher_embedding: Tensor,
        indices: Tensor,
        contrast_idx: Tensor | None = None,
    ) -> Tensor:
        """``contrast_idx`` (optional, ``(B, K+1)``, the positive first) replaces the internal draw."""
        es = check_embedding(student_embedding, "student_embedding")
        et = check_embedding(teacher_embedding, "teacher_embedding").detach()
        check_same_batch(es, et, "student_embedding", "teacher_embedding")
        for x, head, name in ((es, self.student_head, "student"), (et, self.teacher_head, "teacher")):
            if x.shape[1] != head.in_features:
                raise ValueError(
                    f"{name}_embedding has width {x.shape[1]} but this CRDLoss was built for "
                    f"{head.in_features}; build it with the pooled width of the {name} network"
                )
        idx = check_indices(indices, es.shape[0], self.num_samples, es.device)
        if contrast_idx is None:
            contrast_idx = self.sample(idx)
        elif contrast_idx.shape != (es.shape[0], self.num_negatives + 1):
            raise ValueError(
                f"contrast_idx must have shape (B, K+1) = ({es.shape[0]}, {self.num_negatives + 1}), got "
                f"{tuple(contrast_idx.shape)}"
            )
        dt = self.memory_student.dtype
        vs = F.normalize(self.student_head(es.to(dt)), dim=1)  # (B, feat_dim)
        vt = F.normalize(self.teacher_head(et.to(dt)), dim=1)
        if not self._normalisers_set and bool((self.normalisers < 0).any()):
            with torch.no_grad():  # Z = mean score of the first batch times n, then fixed
                for i, (v, mem) in enumerate(((vs, self.memory_teacher), (vt, self.memory_student))):
                    if self.normalisers[i] < 0:
                        s = (_scores(v, mem, contrast_idx) / self.temperature).exp()
                        self.normalisers[i] = s.mean() * self.num_samples
        self._normalisers_set = True
        loss = crd_loss(
            vs,
            vt,
            self.memory_student,
            self.memory_teacher,
            contrast_idx,
            self.normalisers,
            temperature=self.temperature,
        )
        if self.training:
            self._update(idx, vs.detach(), vt.detach())
        return loss

    @torch.no_grad()
    def _update(self, idx: Tensor, vs: Tensor, vt: Tensor) -> None:
        # Out of place: this step's loss may have saved the old bank for its backward pass.
        m = self.momentum
        for name, v in (("memory_student", vs), ("memory_teacher", vt)):
            mem = getattr(self, name)
            pos = mem.index_select(0, idx).mul_(m).add_(v, alpha=1 - m)
            setattr(self, name, mem.index_copy(0, idx, pos / pos.norm(dim=1, keepdim=True)))

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, feat_dim={self.feat_dim}, num_negatives={self.num_negatives}, "
            f"temperature={self.temperature}, momentum={self.momentum}, negatives={self.negatives!r}"
        )


def _forget_normalisers(module: CRDLoss, incompatible_keys: object) -> None:
    module._normalisers_set = False  # the loaded Z may be the unset -1 of a checkpoint before the first step
