"""``DistillSettings``: what :class:`~unikd.lm.DistillationTrainer` minimises and where its teacher runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from unikd.losses._common import check_weight
from unikd.token import list_cross_tokenizer_losses, list_token_losses

from .generation_settings import GenerationSettings, check_fractions

# Names accepted for teacher_dtype (and the example's dtype settings), as in Hugging Face configs.
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
}


def parse_dtype(value: str | torch.dtype | None, name: str) -> torch.dtype | None:
    """``None`` / ``""`` (keep the model's dtype), a dtype name from :data:`DTYPES` or a ``torch.dtype``."""
    if value is None or value == "" or isinstance(value, torch.dtype):
        return value or None
    if isinstance(value, str) and value.lower() in DTYPES:
        return DTYPES[value.lower()]
    raise ValueError(f"{name}={value!r} is not a dtype; use one of {', '.join(DTYPES)} (or leave it unset)")


def parse_device(value: str | torch.device | None, name: str) -> torch.device | None:
    if value is None or value == "":
        return None
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a device; use e.g. 'cpu', 'cuda' or 'cuda:1'") from exc


# How a cross-tokenizer loss pairs student and teacher positions (unikd.token.alignment).
ALIGNMENTS = ("span", "truncation")


@dataclass
class DistillSettings:
    """What the trainer minimises: ``ce_weight * CE + weight * loss(student, teacher)`` per kept token.

    ``loss`` is a name from :func:`unikd.token.list_token_losses` (``kd``, ``reverse_kl``, ``jsd``, ``dkd``,
    ``nkd``, ``taid``); ``hyperparameters`` its settings (e.g. ``{"temperature": 2.0}``; for ``taid`` also
    ``t_start``, ``t_end``, ``alpha``, ``beta``, ``adaptive``). ``chunk_size`` is tokens per chunk of the
    fused path (None: about 2**25 logits per chunk). ``vocab_size`` cuts padded heads to the tokenizer.

    ``teacher_device`` / ``teacher_dtype`` place the frozen teacher (default: the training device, the
    teacher's own dtype), e.g. ``teacher_device="cpu"`` beside a GPU student or ``teacher_dtype="bfloat16"``.
    A teacher on another device gets its batch there and sends back one ``(B, T, d)`` hidden state per
    micro-batch (``fused=False``: its ``(B, T, V)`` logits); the fused loss keeps a copy of the teacher's
    output head on the student's device.

    A cross-tokenizer loss (:func:`unikd.token.list_cross_tokenizer_losses`: ``uld``, ``span_kl``) trains a
    student whose tokenizer differs from the teacher's (:mod:`unikd.lm.cross_tokenizer`); ``alignment``
    pairs their positions: ``span`` (tokens ending at the same character) or ``truncation`` (the k-th
    kept position of each, as the ULD authors).
    """

    loss: str = "kd"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    ce_weight: float = 1.0
    weight: float = 1.0
    fused: bool = True
    chunk_size: int | None = None
    vocab_size: int | None = None
    ignore_index: int = -100
    teacher_device: str | None = None
    teacher_dtype: str | None = None
    on_policy: float = 0.0
    seq_kd: float = 0.0
    generation: GenerationSettings | dict[str, Any] | None = None
    alignment: str = "span"

    def __post_init__(self) -> None:
        cross = list_cross_tokenizer_losses()
        if (self.loss not in list_token_losses() and self.loss not in cross) or self.loss == "uskd":
            names = ", ".join(n for n in list_token_losses() if n != "uskd")
            raise ValueError(
                f"unknown teacher loss {self.loss!r}; use one of {names}, or for a teacher with another "
                f"tokenizer {', '.join(cross)} (uskd trains a weak head, not a teacher: call "
                "unikd.token.FusedDistillLoss('uskd') in your own loop)"
            )
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}")
        if self.alignment != "span" and self.loss not in cross:
            raise ValueError(
                f"alignment={self.alignment!r} pairs the positions of two tokenizers; the loss {self.loss!r} "
                "compares one tokenizer's positions directly: leave alignment unset"
            )
        # fused=False combines the two terms here, not in FusedDistillLoss: check the weights for both paths
        self.ce_weight = check_weight(self.ce_weight, "ce_weight")
        self.weight = check_weight(self.weight, "weight")
        parse_device(self.teacher_device, "teacher_device")
        parse_dtype(self.teacher_dtype, "teacher_dtype")
        self.on_policy, self.seq_kd = check_fractions(self.on_policy, self.seq_kd)
        self.generation = GenerationSettings.coerce(self.generation)

    @property
    def cross_tokenizer(self) -> bool:
        """The loss compares two tokenizers' distributions (``uld``, ``span_kl``)."""
        return self.loss in list_cross_tokenizer_losses()

    @property
    def generates(self) -> bool:
        """Some batches train on sampled completions (``on_policy`` or ``seq_kd`` above 0)."""
        return self.on_policy > 0 or self.seq_kd > 0


__all__ = ["ALIGNMENTS", "DTYPES", "DistillSettings", "GenerationSettings", "parse_device", "parse_dtype"]
