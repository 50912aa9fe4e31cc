"""Batches for cross-tokenizer distillation: every text tokenized by the student's and by the teacher's
tokenizer, each token with its character offsets in the text.

The offsets are what lets the trainer pair the two models' positions (:func:`unikd.token.span_alignment`:
tokens that end at the same character), so the collator keeps them; the teacher's ids are only ever read by
the teacher. A batch holds, right-padded to its longest row (at most ``max_length`` tokens a side):

- ``input_ids``, ``attention_mask``, ``labels`` (the student's; padding at ``ignore_index``);
- with a teacher tokenizer, ``teacher_input_ids``, ``teacher_attention_mask``, ``teacher_labels`` and
  ``student_offsets`` / ``teacher_offsets`` ``(B, T, 2)`` (padding and prefix tokens ``(0, 0)``);
- with ``with_bytes=True``, ``scored_bytes`` ``(B,)``: the UTF-8 bytes of the text that the student's
  scored tokens (every token after the first) cover, the denominator of bits per byte (:mod:`unikd.lm.bpb`).

Tokenizers: a ``tokenizers.Tokenizer`` or a fast Hugging Face tokenizer (``return_offsets_mapping``);
special tokens are not added (``prefix_id`` prepends one id, e.g. the end-of-text token, so that the
first token of the text is predicted too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

Encoded = tuple[list[int], list[tuple[int, int]]]


def _is_raw(tokenizer: Any) -> bool:
    return type(tokenizer).__module__.startswith("tokenizers") and hasattr(tokenizer, "encode_batch")


def encode_with_offsets(tokenizer: Any, texts: Sequence[str], name: str = "tokenizer") -> list[Encoded]:
    """``(ids, offsets)`` of each text, no special tokens added; offsets are character ``(start, end)``."""
    if _is_raw(tokenizer):
        return [(e.ids, [tuple(o) for o in e.offsets]) for e in tokenizer.encode_batch(list(texts), False)]
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"the {name} must report character offsets: pass a tokenizers.Tokenizer or a fast Hugging Face "
            f"tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True)), got {type(tokenizer).__name__}"
        )
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return [
        (list(ids), [tuple(o) for o in offs])
        for ids, offs in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ]


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's padding id (its end-of-text id without one; 0 for a bare ``tokenizers.Tokenizer``
    without either). Padding is masked everywhere, so its value only has to be a valid id."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    if _is_raw(tokenizer):
        found = tokenizer.token_to_id("<|endoftext|>")
        return 0 if found is None else int(found)
    return 0


def _text(example: Any, key: str) -> str:
    if isinstance(example, str):
        return example
    value = example.get(key) if isinstance(example, Mapping) else None
    if not isinstance(value, str):
        what = sorted(example) if isinstance(example, Mapping) else type(example).__name__
        raise ValueError(
            f"a cross-tokenizer example must hold its text under {key!r} (both models tokenize the same "
            f"text), got {what}; give rows like {{'{key}': '...'}}"
        )
    return value


def _side(
    rows: list[Encoded], max_length: int, prefix: int | None, pad: int, ignore: int
) -> dict[str, Tensor]:
    kept = []
    for ids, offs in rows:
        if prefix is not None:
            ids, offs = [prefix, *ids], [(0, 0), *offs]
        kept.append((ids[:max_length], offs[:max_length]))
    width = max(1, max(len(ids) for ids, _ in kept))
    b = len(kept)
    input_ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.long)
    offsets = torch.zeros(b, width, 2, dtype=torch.long)
    for r, (ids, offs) in enumerate(kept):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids, dtype=torch.long)
        mask[r, :n] = 1
        if n:
            offsets[r, :n] = torch.tensor(offs, dtype=torch.long)
    labels = input_ids.masked_fill(mask == 0, ignore)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "offsets": offsets}


def scored_bytes(text: str, offsets: Tensor, mask: Tensor) -> int:
    """UTF-8 bytes of ``text`` from the start of the second real token (the first one predicted) to the end
    of the last one; a token that splits a character shares its offsets, so spans never count it twice."""
    n = int(mask.sum())
    if n < 2:
        return 0
    start, end = int(offsets[1, 0]), int(offsets[n - 1, 1])
    return len(text[start:end].encode("utf-8")) if end > start else 0


class CrossTokenizerCollator:
    """``collator(examples)``: each example's ``text_key`` (or a plain string) tokenized by both tokenizers.

    ``teacher_tokenizer=None`` gives the student's keys only (a CE baseline trained on the same texts).
    ``max_length`` cuts each side to that many tokens (the models' context); the cut side's alignment then
    ends where its tokens end. ``prefix_id`` / ``teacher_prefix_id`` prepend one id to every row.
    """

    def __init__(
        self,
        student_tokenizer: Any,
        teacher_tokenizer: Any = None,
        *,
        max_length: int,
        text_key: str = "text",
        prefix_id: int | None = None,
        teacher_prefix_id: int | None = None,
        with_bytes: bool = False,
        ignore_index: int = -100,
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(
                f"max_length must be an int >= 2 (tokens per row, the context), got {max_length!r}"
            )
        encode_with_offsets(student_tokenizer, ["a"], "student_tokenizer")  # fail now, not at the first batch
        if teacher_tokenizer is not None:
            encode_with_offsets(teacher_tokenizer, ["a"], "teacher_tokenizer")
        self.student, self.teacher = student_tokenizer, teacher_tokenizer
        self.max_length, self.text_key = max_length, text_key
        self.prefix_id, self.teacher_prefix_id = prefix_id, teacher_prefix_id
        self.with_bytes, self.ignore_index = with_bytes, ignore_index
        self.pad = (pad_id_of(student_tokenizer), pad_id_of(teacher_tokenizer))

    def __call__(self, examples: Sequence[Any]) -> dict[str, Tensor]:
        if not examples:
            raise ValueError("the collator got an empty batch")
        texts = [_text(e, self.text_key) for e in examples]
        s = _side(
            encode_with_offsets(self.student, texts),
            self.max_length,
            self.prefix_id,
            self.pad[0],
            self.ignore_index,
        )
        out = {k: s[k] for k in ("input_ids", "attention_mask", "labels")}
        if self.with_bytes:
            out["scored_bytes"] = torch.tensor(
                [scored_bytes(t, s["offsets"][r], s["attention_mask"][r]) for r, t in enumerate(texts)]
            )
        if self.teacher is None:
            return out
        t = _side(
            encode_with_offsets(self.teacher, texts),
            self.max_length,
            self.teacher_prefix_id,
            self.pad[1],
            self.ignore_index,
        )
        out.update(
            teacher_input_ids=t["input_ids"],
            teacher_attention_mask=t["attention_mask"],
            teacher_labels=t["labels"],
            student_offsets=s["offsets"],
            teacher_offsets=t["offsets"],
        )
        return out


__all__ = ["CrossTokenizerCollator", "encode_with_offsets", "pad_id_of", "scored_bytes"]
