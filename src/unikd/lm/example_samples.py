"""The teacher's view of a student's own text: the teacher's per-token NLL of the student's samples.

``unikd lm-distill sample_eval=N`` takes the prompts of the first N validation sequences (their masked
prefix, or their first ``generation.prompt_length`` tokens for packed text), samples one completion per
prompt from the trained student with the run's generation settings and fixed per-prompt seeds (the same
prompts and seeds for every method and seed of a folder), and scores the completions with the teacher:
``val_sample_nll`` (nats per generated token, the end token included). Lower means text the teacher finds
more likely, the quantity on-policy distillation targets; it says nothing about diversity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .generation import pack, row_seed, sample_completions
from .generation_settings import GenerationSettings
from .on_policy import batch_prompts


@torch.no_grad()
def teacher_nll_of_samples(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    settings: GenerationSettings,
    *,
    prompts: int,
    vocab: int,
    eos: Any,
    pad: int,
    context: int | None,
    batch_size: int = 64,
) -> dict[str, float]:
    """``{"val_sample_nll", "val_sample_tokens"}`` over the first ``prompts`` prompts of ``batches``."""
    asked: list[list[int]] = []
    for batch in batches:
        asked += batch_prompts(batch, prompt_length=settings.prompt_length)
        if len(asked) >= prompts:
            break
    asked = asked[:prompts]
    total, tokens = 0.0, 0
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    try:
        for start in range(0, len(asked), batch_size):
            part = asked[start : start + batch_size]
            seeds = [row_seed("sample_eval", start + i) for i in range(len(part))]
            done = sample_completions(
                student, part, seeds, settings, vocab=vocab, eos=eos, pad=pad, context=context
            )
            packed = {k: v.to(device) for k, v in pack(part, done, pad=pad).items()}
            logits = teacher(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"]).logits
            y = packed["labels"][:, 1:]
            nll = F.cross_entropy(
                logits[:, :-1, :vocab].float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"
            )
            total += float(nll)
            tokens += int((y != -100).sum())
    finally:
        teacher.train(was_training)
    return {"val_sample_nll": total / tokens if tokens else math.nan, "val_sample_tokens": tokens}


def sample_metrics(
    cfg: Any, student: nn.Module, teacher: nn.Module, data: dict[str, Any], trainer: Any
) -> dict:
    """The example's generation entries of ``result.json``: the training's sampling counts and time
    (``generation``, when the run sampled) and ``val_sample_nll`` (when ``cfg.sample_eval``)."""
    from .checks import context_length
    from .corpus import batches

    out: dict[str, Any] = {}
    stats = getattr(trainer, "on_policy_batches", None)
    if stats is not None:
        out["generation"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.stats.items()}
    if cfg.sample_eval:
        if "val_batches" in data:
            val = data["val_batches"]()
        else:
            val = ({"input_ids": b, "labels": b} for b in batches(data["val"], 64))
        eos = student.generation_config.eos_token_id
        contexts = [c for c in (context_length(student), context_length(teacher)) if c]
        out.update(
            teacher_nll_of_samples(
                student,
                teacher,
                val,
                cfg.generation,
                prompts=cfg.sample_eval,
                vocab=teacher.get_output_embeddings().weight.shape[0],
                eos=eos,
                pad=eos if isinstance(eos, int) else 0,
                context=min(contexts) if contexts else None,
            )
        )
    return out


__all__ = ["sample_metrics", "teacher_nll_of_samples"]
