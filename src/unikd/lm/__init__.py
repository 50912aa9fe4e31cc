"""Language-model distillation on the Hugging Face Trainer: ``unikd.lm`` (extra ``unikd[lm]``).

- :class:`DistillationTrainer` / :class:`DistillSettings`: a ``transformers.Trainer`` whose loss is any
  teacher loss of :mod:`unikd.token`, fused with the output heads so no ``(B, T, V)`` logits exist; runs
  under ``torchrun`` / ``accelerate launch`` unchanged.
- :func:`check_pair`, :func:`check_dataset`: the preflight the trainer runs (vocabulary, heads, tokenizers,
  context length, labels).
- :func:`evaluate_lm`: validation perplexity and per-token KL to the teacher.
- :mod:`unikd.lm.example`: ``unikd lm-distill``, an end-to-end example on Python's standard library.

See ``docs/lm.md``.
"""

from __future__ import annotations

from ._require import EXTRA_HINT, require

require("transformers")

from .capture import HiddenCapture, check_head_capture, output_head  # noqa: E402
from .checks import check_dataset, check_pair, context_length  # noqa: E402
from .evaluate import evaluate_lm  # noqa: E402
from .trainer import DistillationTrainer, DistillSettings, freeze_teacher  # noqa: E402

__all__ = [
    "EXTRA_HINT",
    "DistillSettings",
    "DistillationTrainer",
    "HiddenCapture",
    "check_dataset",
    "check_head_capture",
    "check_pair",
    "context_length",
    "evaluate_lm",
    "freeze_teacher",
    "output_head",
]
