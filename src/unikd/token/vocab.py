"""Vocabulary checks: the student and the teacher must score the same token ids.

Output heads are often padded (a 151,936-row head for a 151,665-token tokenizer, say), so two models of one
tokenizer family can have heads of different sizes. Cutting both to the shared tokenizer size is correct;
guessing it is not, so a size mismatch without an explicit ``vocab_size`` is an error. Two different
tokenizers give different meanings to the same id, which no cut can fix: :func:`check_same_tokenizer`
compares the vocabularies themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def resolve_vocab(
    student_size: int, teacher_size: int, vocab_size: int | None, *, teacher_name: str = "teacher"
) -> int:
    """The number of leading vocabulary entries both sides are cut to.

    Without ``vocab_size`` the sizes must be equal; with it, ``2 <= vocab_size <= min(sizes)``. Raises
    ``ValueError`` naming both sizes and the fix.
    """
    if vocab_size is None:
        if student_size != teacher_size:
            raise ValueError(
                f"vocabulary size mismatch: the student has V={student_size} entries but the {teacher_name} "
                f"has V={teacher_size}. If both use the same tokenizer and one head is padded, pass "
                f"vocab_size=<the tokenizer's size> (at most {min(student_size, teacher_size)}) to cut both; "
                "models with different tokenizers cannot be distilled token by token"
            )
        return int(student_size)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
    if vocab_size > min(student_size, teacher_size):
        raise ValueError(
            f"vocab_size={vocab_size} is larger than a vocabulary it should cut: the student has "
            f"V={student_size} and the {teacher_name} V={teacher_size}; use at most "
            f"{min(student_size, teacher_size)}"
        )
    return vocab_size


def _as_vocab(obj: Any, name: str) -> Mapping[str, int]:
    if isinstance(obj, Mapping):
        return obj
    get_vocab = getattr(obj, "get_vocab", None)
    if callable(get_vocab):
        return get_vocab()
    raise ValueError(
        f"{name} must be a token -> id mapping or a tokenizer with get_vocab(), got {type(obj).__name__}"
    )


def check_same_tokenizer(
    student_tokenizer: Any, teacher_tokenizer: Any, *, vocab_size: int | None = None, show: int = 5
) -> None:
    """Raise ``ValueError`` unless both tokenizers map the same tokens to the same ids.

    Each argument is a ``{token: id}`` mapping or an object with ``get_vocab()`` (Hugging Face tokenizers).
    With ``vocab_size`` only ids below it are compared (added tokens beyond the shared vocabulary are then
    allowed). The message lists the first ``show`` differences.
    """
    sv = _as_vocab(student_tokenizer, "student_tokenizer")
    tv = _as_vocab(teacher_tokenizer, "teacher_tokenizer")
    limit = vocab_size if vocab_size is not None else float("inf")
    s_items = {tok: i for tok, i in sv.items() if i < limit}
    t_items = {tok: i for tok, i in tv.items() if i < limit}
    diffs = []
    for tok in sorted(set(s_items) | set(t_items), key=lambda k: (s_items.get(k, t_items.get(k, 0)), k)):
        a, b = s_items.get(tok), t_items.get(tok)
        if a != b:
            diffs.append(f"{tok!r}: student id {a}, teacher id {b}")
    if diffs:
        raise ValueError(
            f"the student and teacher tokenizers differ in {len(diffs)} token(s) "
            f"(student {len(s_items)} ids, teacher {len(t_items)} ids"
            f"{'' if vocab_size is None else f' below vocab_size={vocab_size}'}), e.g. "
            + "; ".join(diffs[:show])
            + ". Token-level distillation needs one tokenizer: the same id must mean the same token"
        )


__all__ = ["check_same_tokenizer", "resolve_vocab"]
