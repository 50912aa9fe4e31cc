"""Checks that run before any training step: the teacher fits the student, the data fits both models.

Each failure is a ``ValueError`` that names what does not fit and how to fix it, raised from the trainer's
constructor so that a bad pairing never costs a training step.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from torch import Tensor, nn

from unikd.token import check_same_tokenizer, list_cross_tokenizer_losses, resolve_vocab

from .capture import head_parameters
from .sharding import head_shape

# Attributes under which Hugging Face configs store the context length, in the order they are tried.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(model: nn.Module) -> int | None:
    """The longest sequence ``model`` accepts (from its config), or None when the config does not say."""
    cfg = getattr(model, "config", None)
    for key in CONTEXT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hidden_size(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# Said whenever a same-tokenizer loss meets two vocabularies: the losses that do not need one tokenizer.
CROSS_HINT = (
    "For a teacher with another tokenizer use a cross-tokenizer loss ("
    + ", ".join(list_cross_tokenizer_losses())
    + ") with both tokenizers: DistillSettings('uld'), student_tokenizer=..., teacher_tokenizer=..."
)


def check_pair(
    student: nn.Module,
    teacher: nn.Module,
    *,
    vocab_size: int | None = None,
    student_tokenizer: Any = None,
    teacher_tokenizer: Any = None,
) -> int:
    """Check that ``teacher`` can teach ``student`` token by token; return the shared vocabulary size.

    Both need a linear output head whose input width is the model's hidden size; the heads must cover the
    same vocabulary (or ``vocab_size`` cuts both); given tokenizers must map the same tokens to the same ids.
    """
    if teacher is student:
        raise ValueError("the teacher is the student itself; pass a separate (trained) teacher model")
    heads = {}
    for role, model in (("student", student), ("teacher", teacher)):
        rows, cols = head_shape(head_parameters(model, role)[0])  # sharded heads: their full shape
        width = hidden_size(model)
        if width is not None and cols != width:
            raise ValueError(
                f"the {role}'s output head expects inputs of width {cols} but its hidden size is "
                f"{width}: the head does not belong to this model; load the {role} with its own head "
                "(e.g. AutoModelForCausalLM.from_pretrained)"
            )
        heads[role] = rows
    if (student_tokenizer is None) != (teacher_tokenizer is None):
        raise ValueError("pass both student_tokenizer and teacher_tokenizer (or neither) to compare them")
    try:
        vocab = resolve_vocab(heads["student"], heads["teacher"], vocab_size)
    except ValueError as exc:
        if vocab_size is not None:  # a bad cut, not two vocabularies
            raise
        raise ValueError(f"{exc}. {CROSS_HINT}") from None
    if student_tokenizer is not None:
        try:
            check_same_tokenizer(student_tokenizer, teacher_tokenizer, vocab_size=vocab_size)
        except ValueError as exc:
            raise ValueError(f"{exc}. {CROSS_HINT}") from None
    if student_tokenizer is not None:
        size = len(student_tokenizer.get_vocab()) if hasattr(student_tokenizer, "get_vocab") else None
        if size is not None and size > vocab:
            raise ValueError(
                f"the tokenizer has {size} tokens but the models' heads score only {vocab}: ids >= {vocab} "
                "would be out of range; resize the embeddings (model.resize_token_embeddings) of both models"
            )
    return vocab


def _ids(example: Any, key: str) -> Any:
    if isinstance(example, dict):
        return example.get(key)
    return getattr(example, key, None)


def _length_and_kept(example: Any, ignore_index: int) -> tuple[int, int]:
    ids = _ids(example, "input_ids")
    if ids is None:
        what = sorted(example) if isinstance(example, dict) else type(example).__name__
        raise ValueError(
            f"a training example has no 'input_ids' (it holds {what}); "
            "tokenize the dataset first (each example a dict with input_ids and labels)"
        )
    labels = _ids(example, "labels")
    labels = ids if labels is None else labels
    values = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    n = len(ids) if not isinstance(ids, Tensor) else int(ids.shape[-1])
    # The causal shift: position t predicts label t + 1, so the first label is never a target.
    kept = sum(1 for v in values[1:] if v != ignore_index)
    return n, kept


def check_dataset(
    dataset: Any,
    context: int | None,
    *,
    ignore_index: int = -100,
    max_examples: int = 10_000,
    name: str = "train_dataset",
) -> dict[str, int]:
    """Scan up to ``max_examples`` examples: none longer than ``context``, at least one token to learn from.

    Returns ``{"examples": scanned, "tokens": kept next-token targets, "longest": tokens}``. A dataset
    without ``__len__``/``__getitem__`` (an iterable) is not scanned.
    """
    if not (isinstance(dataset, Sized) and hasattr(dataset, "__getitem__")):
        return {"examples": 0, "tokens": 0, "longest": 0}
    total = len(dataset)
    if total == 0:
        raise ValueError(f"{name} is empty; give the trainer at least one tokenized example")
    scanned = min(total, max_examples)
    kept = longest = 0
    for i in range(scanned):
        n, k = _length_and_kept(dataset[i], ignore_index)
        if context is not None and n > context:
            raise ValueError(
                f"{name}[{i}] has {n} tokens but the models accept at most {context} (their config's context "
                f"length): cut the data into blocks of <= {context} tokens "
                f"(e.g. tokenizer(..., truncation=True, "
                f"max_length={context}))"
            )
        kept += k
        longest = max(longest, n)
    if kept == 0:
        raise ValueError(
            f"{name} has no token to learn from: in the first {scanned} examples every next-token label is "
            f"ignore_index={ignore_index} (or each sequence is one token long). Set labels to the input ids "
            "(e.g. DataCollatorForLanguageModeling(tokenizer, mlm=False)) and mask only padding or prompts"
        )
    return {"examples": scanned, "tokens": kept, "longest": longest}


__all__ = ["CONTEXT_KEYS", "check_dataset", "check_pair", "context_length", "hidden_size"]
