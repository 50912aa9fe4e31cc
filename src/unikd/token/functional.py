"""The token losses as plain functions of materialised logits.

Each flattens ``(B, T, V)`` to the tokens whose label is not ``ignore_index`` and calls the classification
kernel of the same name in :mod:`unikd.losses` on those rows, so on the kept rows it equals that
classification loss (with the same hyperparameters). ``reduction="mean"`` divides by the number of kept
tokens; a batch whose tokens are all ignored gives 0 with a zero gradient (never NaN). The teacher may be
dense logits or a :class:`~unikd.token.SparseTeacher` (not for USKD, whose second input is the weak logits).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from unikd.losses._common import as_float32

from .rows import (
    check_ignore_index,
    check_label_range,
    check_labels,
    check_reduction,
    check_token_logits,
    empty_loss,
    kept_rows,
    rows_loss,
)
from .sparse import SparseTeacher
from .specs import get_spec
from .vocab import resolve_vocab

Teacher = Tensor | SparseTeacher


def token_loss(
    name: str,
    student_logits: Tensor,
    other: Teacher,
    labels: Tensor | None,
    *,
    ignore_index: int = -100,
    vocab_size: int | None = None,
    reduction: str = "mean",
    **hyperparameters: Any,
) -> Tensor:
    """The token loss registered as ``name`` (``kd``, ``reverse_kl``, ``jsd``, ``dkd``, ``nkd``, ``uskd``,
    ``taid``) with its hyperparameters; the named functions below call this."""
    spec = get_spec(name)
    hp = spec.hyperparameters(hyperparameters)
    reduction = check_reduction(reduction)
    rows = kept_rows(spec, student_logits, other, labels, ignore_index=ignore_index, vocab_size=vocab_size)
    if rows.count == 0:
        return empty_loss(student_logits, other)
    denom = rows.count if reduction == "mean" else 1
    return rows_loss(spec, rows.student, rows.other, rows.target, denom, hp)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    labels: Tensor | None,
    *,
    ignore_index: int = -100,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Forward KL per token, ``T**2 KL(softmax(z_t/T) || softmax(z_s/T))`` (:func:`unikd.losses.kd_loss`).

    Shapes: logits ``(B, T, V)`` or ``(N, V)``; ``labels`` of the token layout (ids of the next token,
    ``ignore_index`` to leave a position out) or None to keep every position. Returns a 0-dim float32 tensor.
    """
    return token_loss(
        "kd",
        student_logits,
        teacher_logits,
        labels,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        temperature=temperature,
    )


def reverse_kl_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    labels: Tensor | None,
    *,
    ignore_index: int = -100,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Reverse KL per token, ``T**2 KL(softmax(z_s/T) || softmax(z_t/T))``
    (:func:`unikd.losses.reverse_kl_loss`)."""
    return token_loss(
        "reverse_kl",
        student_logits,
        teacher_logits,
        labels,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        temperature=temperature,
    )


def jsd_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    labels: Tensor | None,
    *,
    ignore_index: int = -100,
    beta: float = 0.5,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Generalized JSD per token with GKD's skew ``beta`` (:func:`unikd.losses.jsd_loss`; beta=0 forward KL,
    beta=1 reverse KL, as TRL's ``generalized_jsd_loss``)."""
    return token_loss(
        "jsd",
        student_logits,
        teacher_logits,
        labels,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        beta=beta,
        temperature=temperature,
    )


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    alpha: float = 1.0,
    beta: float = 0.5,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """DKD per token with the next token as the target class (:func:`unikd.losses.dkd_loss`).

    Defaults alpha=1, beta=0.5, T=1: the language-model DKD of SakanaAI/TAID (``src/distil_losses/dkd.py``).
    """
    return token_loss(
        "dkd",
        student_logits,
        teacher_logits,
        labels,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        alpha=alpha,
        beta=beta,
        temperature=temperature,
    )


def nkd_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    temperature: float = 1.0,
    gamma: float = 1.5,
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """NKD per token with the next token as the target class (:func:`unikd.losses.nkd_loss`)."""
    return token_loss(
        "nkd",
        student_logits,
        teacher_logits,
        labels,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        temperature=temperature,
        gamma=gamma,
    )


def uskd_loss(
    student_logits: Tensor,
    weak_logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    alpha: float = 1.0,
    beta: float = 0.1,
    mu: float = 0.005,
    rank: str = "paper",
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Teacher-free USKD per token with the next token as the target (:func:`unikd.losses.uskd_loss`).

    ``weak_logits`` ``(B, T, V)`` are the model's own output head applied to a middle layer's hidden state
    (``head(h_mid)``: no extra V x d head); gradients flow into both inputs. The batch mean of ``S_t**2`` in
    the customised soft target runs over the kept tokens of the batch.
    """
    return token_loss(
        "uskd",
        student_logits,
        weak_logits,
        labels,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        alpha=alpha,
        beta=beta,
        mu=mu,
        rank=rank,
    )


def taid_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    labels: Tensor | None,
    *,
    t: float | Tensor = 0.4,
    ignore_index: int = -100,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """TAID per token at interpolation ``t`` (:func:`unikd.losses.taid_loss`); the adaptive schedule of ``t``
    lives in :class:`unikd.losses.TAIDSchedule` (owned by :class:`TokenDistillLoss` and
    :class:`FusedDistillLoss`)."""
    return token_loss(
        "taid",
        student_logits,
        teacher_logits,
        labels,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        t=t,
        temperature=temperature,
    )


def cross_entropy(
    student_logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    vocab_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """The next-token cross-entropy on the same rows and vocabulary cut as the losses above.

    Equals ``F.cross_entropy(..., ignore_index=ignore_index)`` except that a batch with every token ignored
    gives 0 (not NaN), like the distillation losses.
    """
    zs = check_token_logits(student_logits, "student_logits")
    vocab = resolve_vocab(zs.shape[-1], zs.shape[-1], vocab_size)
    ignore_index = check_ignore_index(ignore_index)
    reduction = check_reduction(reduction)
    y = check_labels(labels, tuple(zs.shape[:-1]), zs.device, required=True, loss_name="cross_entropy")
    keep = y != ignore_index
    check_label_range(y, keep, vocab, ignore_index)
    count = int(keep.sum())
    if count == 0:
        return empty_loss(student_logits)
    rows = as_float32(
        zs.reshape(-1, zs.shape[-1])[:, :vocab]
    )  # (N, V); ignored rows skipped by F.cross_entropy
    total = F.cross_entropy(rows, y, ignore_index=ignore_index, reduction="sum")
    return total / count if reduction == "mean" else total


__all__ = [
    "cross_entropy",
    "dkd_loss",
    "jsd_loss",
    "kd_loss",
    "nkd_loss",
    "reverse_kl_loss",
    "taid_loss",
    "token_loss",
    "uskd_loss",
]
