"""Token-level distillation for language models: ``unikd.token``.

- Losses on token logits ``(B, T, V)`` / ``(N, V)`` with next-token labels and ``ignore_index``:
  :func:`kd_loss`, :func:`reverse_kl_loss`, :func:`jsd_loss`, :func:`dkd_loss`, :func:`nkd_loss`,
  :func:`uskd_loss`, :func:`taid_loss` (each the classification loss of the same name in
  :mod:`unikd.losses` on the kept tokens), :func:`cross_entropy`, :class:`TokenDistillLoss`.
- :func:`fused_distill_loss` / :class:`FusedDistillLoss`: the same losses from hidden states and output
  heads, chunked over tokens, with the cross-entropy in the same pass; never the full logits.
- Sparse teachers: :class:`SparseTeacher` (top-k log-probabilities + a tail bucket), :func:`sparse_topk`,
  :func:`sparse_sample` (tokens drawn from the teacher: an unbiased estimate),
  and their cache :class:`SparseTeacherWriter` / :class:`SparseTeacherCache` (with the token ids beside it,
  :func:`write_cache_token_ids`); :func:`import_logprobs` writes one from top-k log-probabilities produced
  elsewhere (vLLM's format) at a stated temperature, which :func:`teacher_for_loss` hands to the losses.
- Cross-tokenizer losses (teacher and student tokenizers differ), called as ``loss(student_logits,
  teacher_logits, alignment)``: :func:`uld_loss` / :class:`ULDLoss`, :func:`span_kl_loss` /
  :class:`SpanKLLoss`; alignments :func:`truncation_alignment`, :func:`span_alignment`,
  :func:`shared_vocab`; by name :func:`create_cross_tokenizer_loss`.
- Vocabulary checks: :func:`resolve_vocab`, :func:`check_same_tokenizer`; :func:`next_token_labels`.

See ``docs/token.md``.
"""

from __future__ import annotations

from unikd.losses.taid import TAIDSchedule

from .alignment import SharedVocab, TokenAlignment, shared_vocab, span_alignment, truncation_alignment
from .cache import SparseTeacherCache, SparseTeacherWriter
from .cache_tokens import read_cache_token_ids, write_cache_token_ids
from .cross import CROSS_TOKENIZER_LOSSES, create_cross_tokenizer_loss, list_cross_tokenizer_losses
from .functional import (
    cross_entropy,
    dkd_loss,
    jsd_loss,
    kd_loss,
    nkd_loss,
    reverse_kl_loss,
    taid_loss,
    token_loss,
    uskd_loss,
)
from .fused import default_chunk_size, fused_distill_loss
from .fused_reference import fused_distill_loss_reference
from .import_logprobs import import_logprobs
from .modules import FusedDistillLoss, TokenDistillLoss
from .rows import next_token_labels
from .sampled import sparse_sample
from .span_kl import SpanKLLoss, span_kl_loss
from .sparse import SparseTeacher, sparse_topk
from .specs import TOKEN_LOSSES, list_token_losses
from .tempered import teacher_for_loss
from .uld import ULDLoss, uld_loss
from .vocab import check_same_tokenizer, resolve_vocab

__all__ = [
    "CROSS_TOKENIZER_LOSSES",
    "FusedDistillLoss",
    "SharedVocab",
    "SpanKLLoss",
    "SparseTeacher",
    "SparseTeacherCache",
    "SparseTeacherWriter",
    "TAIDSchedule",
    "TOKEN_LOSSES",
    "TokenAlignment",
    "TokenDistillLoss",
    "ULDLoss",
    "check_same_tokenizer",
    "create_cross_tokenizer_loss",
    "cross_entropy",
    "default_chunk_size",
    "dkd_loss",
    "fused_distill_loss",
    "fused_distill_loss_reference",
    "import_logprobs",
    "jsd_loss",
    "kd_loss",
    "list_cross_tokenizer_losses",
    "list_token_losses",
    "next_token_labels",
    "nkd_loss",
    "read_cache_token_ids",
    "resolve_vocab",
    "reverse_kl_loss",
    "shared_vocab",
    "span_alignment",
    "span_kl_loss",
    "sparse_sample",
    "sparse_topk",
    "taid_loss",
    "teacher_for_loss",
    "token_loss",
    "truncation_alignment",
    "uld_loss",
    "uskd_loss",
    "write_cache_token_ids",
]
