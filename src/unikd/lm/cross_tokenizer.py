"""The trainer's path for a teacher with another tokenizer: a cross-tokenizer loss of :mod:`unikd.token`.

Each batch comes from :class:`~unikd.lm.cross_collator.CrossTokenizerCollator`: the same texts tokenized
twice. The student runs on its ids (through the Trainer's model, DDP included), the teacher on its own ids
(frozen, where :mod:`unikd.lm.placement` puts it), and the loss is::

    ce_weight * CE(student) + weight * cross_loss(student_logits, teacher_logits, alignment)

with the alignment built per batch from the two tokenizations (``alignment="span"``: positions whose tokens
end at the same character and whose next token is a kept label on both sides; ``"truncation"``: the k-th
kept position of each). Both models return their ``(B, T, V)`` logits here: the fused head + loss of the
same-tokenizer path pairs rows token by token, which two tokenizations do not have. On-policy sampling and
cached teachers are not available on this path (the constructor says so).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from unikd.token import (
    create_cross_tokenizer_loss,
    cross_entropy,
    next_token_labels,
    span_alignment,
    truncation_alignment,
)

from .capture import head_parameters
from .checks import context_length
from .cross_collator import CrossTokenizerCollator
from .placement import TeacherPlacement
from .settings import DistillSettings

# The collator's keys the cross path reads besides the student's model inputs and labels.
TEACHER_KEYS = ("teacher_input_ids", "teacher_attention_mask", "teacher_labels")
OFFSET_KEYS = ("student_offsets", "teacher_offsets")


def _check_settings(distill: DistillSettings, student_tokenizer: Any, teacher_tokenizer: Any) -> None:
    if student_tokenizer is None or teacher_tokenizer is None:
        raise ValueError(
            f"the cross-tokenizer loss {distill.loss!r} needs both tokenizers: pass student_tokenizer= and "
            "teacher_tokenizer= (each model's own; the collator tokenizes every text with both)"
        )
    if distill.generates:
        raise ValueError(
            f"on_policy / seq_kd sample completions in one tokenizer; the cross-tokenizer loss "
            f"{distill.loss!r} trains on the data's texts only: set on_policy=0 and seq_kd=0"
        )
    if distill.vocab_size is not None:
        raise ValueError(
            "vocab_size cuts two heads of one tokenizer to a shared size; with two tokenizers each model "
            "keeps its own vocabulary: leave vocab_size unset"
        )


def _check_collator(collator: Any, context: int | None) -> None:
    if not isinstance(collator, CrossTokenizerCollator) or collator.teacher is None:
        return  # a collator of the user's own: the batch keys are checked at the first step
    if context is not None and collator.max_length > context:
        raise ValueError(
            f"the collator cuts rows at max_length={collator.max_length} tokens but the models accept at "
            f"most {context}: build CrossTokenizerCollator(..., max_length={context})"
        )


def setup_cross_tokenizer(
    trainer: Any,
    teacher: nn.Module | None,
    distill: DistillSettings,
    student_tokenizer: Any,
    teacher_tokenizer: Any,
) -> None:
    """Set the trainer up for ``distill.loss`` between models of different tokenizers."""
    if teacher is None:
        raise ValueError(
            f"the cross-tokenizer loss {distill.loss!r} needs the teacher model (its logits over its own "
            "vocabulary); a cache of teacher rows is for teachers with the student's tokenizer"
        )
    _check_settings(distill, student_tokenizer, teacher_tokenizer)
    model = trainer.model
    if teacher is model:
        raise ValueError("the teacher is the student itself; pass a separate (trained) teacher model")
    for role, m in (("student", model), ("teacher", teacher)):
        head_parameters(m, role)  # a causal LM with a linear head, named in the error otherwise
    trainer.vocab = None  # each model keeps its own vocabulary
    contexts = [c for c in (context_length(model), context_length(teacher)) if c is not None]
    trainer.context = min(contexts) if contexts else None
    _check_collator(trainer.data_collator, trainer.context)
    trainer.args.remove_unused_columns = False  # the collator reads the texts, not model inputs
    trainer.model_accepts_loss_kwargs = True  # token-exact accumulation, as on the same-tokenizer path
    trainer._placement = TeacherPlacement(
        teacher, trainer.args.device, distill.teacher_device, distill.teacher_dtype
    )
    trainer.teacher = trainer._placement.teacher
    try:
        loss_fn = create_cross_tokenizer_loss(
            distill.loss,
            student_tokenizer=student_tokenizer,
            teacher_tokenizer=teacher_tokenizer,
            **distill.hyperparameters,
        )
    except TypeError as exc:  # an unknown keyword of the loss module
        raise ValueError(
            f"bad hyperparameters {sorted(distill.hyperparameters)} for the cross-tokenizer loss "
            f"{distill.loss!r}: {exc} (docs/token.md, 'Cross-tokenizer losses', lists each loss's settings)"
        ) from None
    trainer.loss_fn = loss_fn.to(trainer.args.device)
    trainer.on_policy_batches = None


def default_cross_collator(
    model: nn.Module, teacher: nn.Module, student_tokenizer: Any, teacher_tokenizer: Any
) -> CrossTokenizerCollator:
    """Both tokenizations of each row's ``text``, cut at the shorter context of the two models."""
    if student_tokenizer is None or teacher_tokenizer is None:
        raise ValueError(
            "a cross-tokenizer loss reads each text with both tokenizers: pass student_tokenizer= and "
            "teacher_tokenizer=, or a data_collator (unikd.lm.CrossTokenizerCollator)"
        )
    contexts = [c for c in (context_length(model), context_length(teacher)) if c is not None]
    if not contexts:
        raise ValueError(
            "neither model's config states its context length: pass data_collator=CrossTokenizerCollator("
            "student_tokenizer, teacher_tokenizer, max_length=...)"
        )
    return CrossTokenizerCollator(student_tokenizer, teacher_tokenizer, max_length=min(contexts))


def _batch_part(inputs: dict[str, Any], key: str) -> Tensor:
    if key not in inputs:
        raise ValueError(
            f"the batch has no {key!r}: a cross-tokenizer loss needs batches of "
            "unikd.lm.CrossTokenizerCollator(student_tokenizer, teacher_tokenizer, max_length=...) (both "
            f"tokenizations and their character offsets); got keys {sorted(inputs)}"
        )
    return inputs.pop(key)


def _alignment(distill: DistillSettings, parts: dict[str, Tensor], targets: Tensor, t_targets: Tensor):
    if distill.alignment == "truncation":
        return truncation_alignment(targets, t_targets, ignore_index=distill.ignore_index)
    ignore = distill.ignore_index
    return span_alignment(
        parts["student_offsets"].cpu(),
        parts["teacher_offsets"].cpu(),
        student_mask=(targets != ignore).cpu(),
        teacher_mask=(t_targets != ignore).cpu(),
    )


def cross_loss(
    trainer: Any, model: nn.Module, inputs: dict[str, Any], targets: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, ce, term)`` of one batch; ``inputs`` is the collated batch without ``labels``."""
    d: DistillSettings = trainer.distill
    parts = {k: _batch_part(inputs, k) for k in (*TEACHER_KEYS, *OFFSET_KEYS)}
    t_targets = next_token_labels(parts["teacher_labels"], ignore_index=d.ignore_index)
    s_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
    logits = model(**s_inputs, use_cache=False).logits
    with torch.no_grad():
        t_inputs = {"input_ids": parts["teacher_input_ids"]}
        t_inputs["attention_mask"] = parts["teacher_attention_mask"]
        t_logits = trainer.teacher(**trainer._placement.inputs(t_inputs), use_cache=False).logits
        t_logits = t_logits.to(logits.device)
    ce = cross_entropy(logits, targets, ignore_index=d.ignore_index)
    alignment = _alignment(d, parts, targets, t_targets)
    term = trainer.loss_fn(logits, t_logits, alignment)
    return d.ce_weight * ce + d.weight * term, ce, term


__all__ = ["OFFSET_KEYS", "TEACHER_KEYS", "cross_loss", "default_cross_collator", "setup_cross_tokenizer"]
