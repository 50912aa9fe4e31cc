"""Language-model distillation on the Hugging Face Trainer: ``unikd.lm`` (extra ``unikd[lm]``).

- :class:`DistillationTrainer` / :class:`DistillSettings`: a ``transformers.Trainer`` whose loss is any
  teacher loss of :mod:`unikd.token`, fused with the output heads so no ``(B, T, V)`` logits exist; runs
  under ``torchrun`` / ``accelerate launch`` unchanged, with DDP or an FSDP2-sharded student
  (:mod:`unikd.lm.sharding`). :class:`DistillationMixin` gives other Trainer
  subclasses (TRL's ``SFTTrainer``) the same loss.
- :func:`check_pair`, :func:`check_dataset`: the preflight the trainer runs (vocabulary, heads, tokenizers,
  context length, labels).
- :func:`evaluate_lm`: validation perplexity and per-token KL to the teacher; :func:`evaluate_bpb`,
  :func:`bits_per_byte`: bits per byte, comparable across tokenizers.
- :class:`CrossTokenizerCollator`: batches for a teacher with another tokenizer (``DistillSettings("uld")``
  or ``"span_kl"``): each text tokenized by both tokenizers, with character offsets.
- :class:`GenerationSettings`, :class:`PromptCollator`: on-policy and sequence-level distillation
  (``DistillSettings(on_policy=..., seq_kd=..., generation=...)``) and text prompt datasets.
- :mod:`unikd.lm.example`: ``unikd lm-distill``, an end-to-end example on Python's standard library.

See ``docs/lm.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._require import EXTRA_HINT

# Imported on first use, so that ``unikd.lm.example_config`` (and ``unikd --help``) work without the extra;
# the first name that needs ``transformers`` raises an ImportError naming ``unikd[lm]``.
_EXPORTS = {
    "DistillSettings": "trainer",
    "DistillationMixin": "trainer",
    "DistillationTrainer": "trainer",
    "freeze_teacher": "trainer",
    "HiddenCapture": "capture",
    "check_head_capture": "capture",
    "output_head": "capture",
    "check_dataset": "checks",
    "check_pair": "checks",
    "context_length": "checks",
    "evaluate_lm": "evaluate",
    "bits_per_byte": "bpb",
    "evaluate_bpb": "bpb",
    "CrossTokenizerCollator": "cross_collator",
    "GenerationSettings": "generation_settings",
    "PromptCollator": "prompt_data",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unikd.lm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"unikd.lm.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["EXTRA_HINT", *sorted(_EXPORTS)]
