"""Span-aligned KL over the shared vocabulary, for models with different tokenizers.

The positions are paired by :func:`~unikd.token.span_alignment` (tokens that end at the same character:
both models have read the same text and predict its continuation) and the two distributions are compared on
the tokens whose strings are identical in both vocabularies (:func:`~unikd.token.shared_vocab`), as GOLD's
matched-vocabulary part (Patiño et al. 2025, "Unlocking On-Policy Distillation for Any Model Family";
TRL ``trl/experimental/gold/gold_trainer.py``, ``ULDLoss._initialize_vocabulary_mapping`` /
``_compute_hybrid_uld_loss``). With ``S`` the shared tokens, ``z[S]`` the logits of those tokens::

    L = T**2 * KL( softmax(z_t[S_t] / T) || softmax(z_s[S_s] / T) )

i.e. forward KL between the two next-token distributions conditioned on the next token being a shared one.
Choices of this implementation, not GOLD's: pairs at common token ends instead of GOLD's merged groups
(GOLD multiplies the probabilities inside a group), a forward KL instead of GOLD's generalised JSD, and the
renormalisation over ``S`` (GOLD compares the unnormalised shared probabilities), which makes the loss 0
exactly when the conditional distributions agree. Tokens outside ``S`` carry no signal here.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from unikd.losses._common import check_positive

from .alignment import SharedVocab, TokenAlignment, shared_vocab
from .cross import CROSS_TOKENIZER_LOSSES, aligned_rows, check_cross_reduction, empty_cross_loss, reduce_pairs


def _check_shared(shared: Any, vs: int, vt: int) -> SharedVocab:
    if not isinstance(shared, SharedVocab):
        raise ValueError(
            f"shared must be a SharedVocab (from shared_vocab(student_tokenizer, teacher_tokenizer)), got "
            f"{type(shared).__name__}"
        )
    if shared.size < 2:
        raise ValueError(f"the shared vocabulary has {shared.size} token(s); the KL needs at least 2")
    for ids, v, name in ((shared.student_ids, vs, "student"), (shared.teacher_ids, vt, "teacher")):
        if int(ids.min()) < 0 or int(ids.max()) >= v:
            raise ValueError(
                f"shared {name} ids reach {int(ids.max())} but the {name} logits have V={v}; build the "
                "shared vocabulary from the tokenizers of these models"
            )
    return shared


def span_kl_per_pair(rs: Tensor, rt: Tensor, shared: SharedVocab, temperature: float) -> Tensor:
    """``(P,)`` values of ``T**2 KL`` over the shared columns of aligned rows."""
    s = rs.index_select(1, shared.student_ids.to(rs.device)) / temperature
    t = rt.index_select(1, shared.teacher_ids.to(rt.device)) / temperature
    log_s, log_t = s.log_softmax(dim=-1), t.log_softmax(dim=-1)
    return F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=-1) * temperature**2


def span_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    alignment: TokenAlignment,
    shared: SharedVocab,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Shared-vocabulary KL between ``student_logits`` ``(B, Ts, Vs)`` and ``teacher_logits``
    ``(B, Tt, Vt)`` on the pairs of ``alignment``; the teacher is detached. 0 (zero gradient)
    without pairs."""
    t = check_positive(temperature, "temperature")
    reduction = check_cross_reduction(reduction)
    rs, rt, seq = aligned_rows(student_logits, teacher_logits, alignment)
    shared = _check_shared(shared, rs.shape[-1], rt.shape[-1])
    if rs.shape[0] == 0:
        return empty_cross_loss(student_logits)
    per_pair = span_kl_per_pair(rs, rt, shared, t)
    return reduce_pairs(per_pair, seq, alignment.num_sequences, reduction, rs, rt)


class SpanKLLoss(nn.Module):
    """Module form of :func:`span_kl_loss` for one tokenizer pair: ``loss(student_logits, teacher_logits,
    alignment)``. ``shared`` is a :class:`SharedVocab`; its ids are buffers (they follow ``.to(device)``)."""

    def __init__(self, shared: SharedVocab, *, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if not isinstance(shared, SharedVocab):
            raise ValueError(f"shared must be a SharedVocab, got {type(shared).__name__}")
        self.register_buffer("student_ids", shared.student_ids.clone(), persistent=False)
        self.register_buffer("teacher_ids", shared.teacher_ids.clone(), persistent=False)
        self.temperature = check_positive(temperature, "temperature")
        self.reduction = check_cross_reduction(reduction)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, alignment: TokenAlignment) -> Tensor:
        shared = SharedVocab(self.student_ids, self.teacher_ids)
        return span_kl_loss(
            student_logits,
            teacher_logits,
            alignment,
            shared,
            temperature=self.temperature,
            reduction=self.reduction,
        )


def _create(*, student_tokenizer: Any = None, teacher_tokenizer: Any = None, **hp: Any) -> SpanKLLoss:
    if student_tokenizer is None or teacher_tokenizer is None:
        raise ValueError(
            "cross-tokenizer loss 'span_kl' compares the shared tokens: pass student_tokenizer= and "
            "teacher_tokenizer= (tokenizers with get_vocab() or {token: id} mappings)"
        )
    return SpanKLLoss(shared_vocab(student_tokenizer, teacher_tokenizer), **hp)


CROSS_TOKENIZER_LOSSES.register("span_kl", _create)

__all__ = ["SpanKLLoss", "span_kl_loss"]
