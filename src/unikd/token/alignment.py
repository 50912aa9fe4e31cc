"""Pairing student and teacher positions when the two models use different tokenizers.

A :class:`TokenAlignment` lists ``P`` aligned pairs ``(sequence, student_position, teacher_position)``: the
student's logits at ``student_logits[sequence, student_position]`` are compared with the teacher's at
``teacher_logits[sequence, teacher_position]``. Two builders:

- :func:`truncation_alignment`: the k-th kept student position with the k-th kept teacher position, up to
  the shorter count (the ULD authors' alignment, Boizard et al. 2024);
- :func:`span_alignment`: positions whose tokens end at the same character of the same text, from the two
  tokenizers' offset mappings. At such a boundary both models have read the same prefix, so their
  next-token distributions describe the same continuation.

:func:`shared_vocab` pairs the ids of tokens whose strings are identical in both vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .vocab import _as_vocab


@dataclass(frozen=True)
class TokenAlignment:
    """``P`` aligned pairs: int64 tensors ``sequence``, ``student_position``, ``teacher_position`` of
    shape ``(P,)``, and the batch size ``num_sequences``."""

    sequence: Tensor
    student_position: Tensor
    teacher_position: Tensor
    num_sequences: int

    def __post_init__(self) -> None:
        parts = (self.sequence, self.student_position, self.teacher_position)
        if not all(isinstance(p, Tensor) and p.dim() == 1 and not p.is_floating_point() for p in parts):
            raise ValueError("an alignment holds three 1-D integer tensors (sequence, student, teacher)")
        if not (parts[0].shape == parts[1].shape == parts[2].shape):
            raise ValueError(
                f"mismatched aligned lengths: sequence {tuple(parts[0].shape)}, student_position "
                f"{tuple(parts[1].shape)}, teacher_position {tuple(parts[2].shape)}; pairs need all three"
            )
        if isinstance(self.num_sequences, bool) or not isinstance(self.num_sequences, int):
            raise ValueError(f"num_sequences must be an int, got {self.num_sequences!r}")

    @property
    def count(self) -> int:
        return int(self.sequence.shape[0])

    def to(self, device: torch.device | str) -> TokenAlignment:
        return TokenAlignment(
            self.sequence.to(device),
            self.student_position.to(device),
            self.teacher_position.to(device),
            self.num_sequences,
        )


def _pairs(seq: list[int], s: list[int], t: list[int], n: int) -> TokenAlignment:
    as_t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return TokenAlignment(as_t(seq), as_t(s), as_t(t), n)


def _check_mask(mask: Any, name: str) -> Tensor:
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        raise ValueError(f"{name} must be a (B, T) tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    return mask


def truncation_alignment(
    student_labels: Tensor, teacher_labels: Tensor, *, ignore_index: int = -100
) -> TokenAlignment:
    """Pair the k-th kept student position with the k-th kept teacher position of each sequence, for
    ``k < min(kept_student, kept_teacher)``; kept = label not ``ignore_index`` (labels already shifted to
    the next token, as everywhere in :mod:`unikd.token`).

    This is the alignment of Nicolas-BZRD/llm-recipes (``models/distillation_model.py``): both answers start
    at their first labelled token and the longer one is cut to the shorter length. It ignores where the
    tokens fall in the text, so pairs drift apart when the tokenizers split words differently.
    """
    s = _check_mask(student_labels, "student_labels")
    t = _check_mask(teacher_labels, "teacher_labels")
    if s.shape[0] != t.shape[0]:
        raise ValueError(
            f"student_labels hold {s.shape[0]} sequences but teacher_labels {t.shape[0]}; pass the same "
            "texts in the same order to both tokenizers"
        )
    seq, sp, tp = [], [], []
    for b in range(s.shape[0]):
        ks = (s[b] != ignore_index).nonzero().squeeze(1).tolist()
        kt = (t[b] != ignore_index).nonzero().squeeze(1).tolist()
        n = min(len(ks), len(kt))
        seq += [b] * n
        sp += ks[:n]
        tp += kt[:n]
    return _pairs(seq, sp, tp, int(s.shape[0]))


def _offsets(x: Any, b: int, name: str) -> list[tuple[int, int]]:
    rows = x[b].tolist() if isinstance(x, Tensor) else list(x[b])
    out = []
    for pair in rows:
        if len(pair) != 2:
            raise ValueError(f"{name}[{b}] must hold (start, end) character offsets, got {pair!r}")
        out.append((int(pair[0]), int(pair[1])))
    return out


def span_alignment(
    student_offsets: Tensor | Sequence[Sequence[tuple[int, int]]],
    teacher_offsets: Tensor | Sequence[Sequence[tuple[int, int]]],
    *,
    student_mask: Tensor | None = None,
    teacher_mask: Tensor | None = None,
) -> TokenAlignment:
    """Pair student position i with teacher position j when both tokens end at the same character.

    ``*_offsets``: per sequence, the ``(start, end)`` character offsets of each token in the same text
    (a fast Hugging Face tokenizer's ``return_offsets_mapping=True``, or ``Encoding.offsets`` of the
    ``tokenizers`` library), as ``(B, T, 2)`` tensors or nested lists. Tokens with
    ``start == end`` (special and padding tokens) are never aligned. ``*_mask`` ``(B, T)``
    (e.g. ``labels != ignore_index``) keeps only the positions whose
    prediction counts; both sides must be kept for a pair. A token end shared by several tokens of one side
    (rare; byte-level pieces of one character) keeps its last position.
    """
    if len(student_offsets) != len(teacher_offsets):
        raise ValueError(
            f"student_offsets hold {len(student_offsets)} sequences but teacher_offsets "
            f"{len(teacher_offsets)}; tokenize the same texts in the same order with both tokenizers"
        )
    n = len(student_offsets)
    masks = []
    for mask, _offs, name in (
        (student_mask, student_offsets, "student"),
        (teacher_mask, teacher_offsets, "teacher"),
    ):
        if mask is not None:
            _check_mask(mask, f"{name}_mask")
            if mask.shape[0] != n:
                raise ValueError(f"{name}_mask has {mask.shape[0]} sequences, the offsets {n}")
        masks.append(mask)
    seq, sp, tp = [], [], []
    for b in range(n):
        so = _offsets(student_offsets, b, "student_offsets")
        to = _offsets(teacher_offsets, b, "teacher_offsets")
        for mask, offs, name in ((masks[0], so, "student"), (masks[1], to, "teacher")):
            if mask is not None and mask.shape[1] != len(offs):
                raise ValueError(
                    f"{name}_mask row {b} has {mask.shape[1]} positions but {len(offs)} offsets; pass "
                    "the mask of the same tokenization"
                )
        ends = {}
        for j, (a, e) in enumerate(to):
            if e > a and (masks[1] is None or bool(masks[1][b, j])):
                ends[e] = j
        last = {}
        for i, (a, e) in enumerate(so):
            if e > a and e in ends and (masks[0] is None or bool(masks[0][b, i])):
                last[e] = i
        for e in sorted(last):
            seq.append(b)
            sp.append(last[e])
            tp.append(ends[e])
    return _pairs(seq, sp, tp, n)


@dataclass(frozen=True)
class SharedVocab:
    """Ids of the tokens present in both vocabularies: ``student_ids[k]`` and ``teacher_ids[k]`` are the
    same string; sorted by teacher id."""

    student_ids: Tensor
    teacher_ids: Tensor

    @property
    def size(self) -> int:
        return int(self.student_ids.shape[0])


def shared_vocab(student_tokenizer: Any, teacher_tokenizer: Any, *, min_shared: int = 2) -> SharedVocab:
    """The tokens whose strings are identical in both vocabularies (``{token: id}`` mappings or tokenizers
    with ``get_vocab()``), as GOLD's matched-vocabulary mapping (TRL,
    ``ULDLoss._initialize_vocabulary_mapping``).

    Strings are compared as stored, so both tokenizers must spell tokens the same way (two byte-level BPEs
    both write a leading space as ``Ġ``; a SentencePiece vocabulary writes ``▁`` and shares few tokens with
    them). Raises ``ValueError`` when fewer than ``min_shared`` tokens are shared.
    """
    sv = _as_vocab(student_tokenizer, "student_tokenizer")
    tv = _as_vocab(teacher_tokenizer, "teacher_tokenizer")
    pairs = sorted((t_id, sv[tok]) for tok, t_id in tv.items() if tok in sv)
    if len(pairs) < min_shared:
        raise ValueError(
            f"the tokenizers share {len(pairs)} token string(s) (student {len(sv)}, teacher {len(tv)}), "
            f"fewer than {min_shared}; the shared-vocabulary loss needs tokenizers that spell tokens alike "
            "(use the ULD loss, which needs no shared tokens)"
        )
    t_ids = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    s_ids = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    return SharedVocab(s_ids, t_ids)


__all__ = ["SharedVocab", "TokenAlignment", "shared_vocab", "span_alignment", "truncation_alignment"]
