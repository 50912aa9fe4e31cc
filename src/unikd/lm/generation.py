"""Sampling completions of prompts, reproducibly, with ``model.generate``.

Every row draws its tokens from its own ``torch.Generator``, seeded by :func:`row_seed` from the trainer's
seed, the optimizer step and the example's place in the step's global batch; the draw happens in a logits
processor (:class:`SeededSampler`) that hands ``generate`` a one-hot choice, and ``generate`` runs greedy
(``do_sample=False``), so its caching, left-padding and end-of-sequence handling are the library's while
the randomness is ours. A row's sample then depends on its prompt, its seed and the model, not on which
other rows share its batch or process, nor on the global random state (so a resumed run and a run on more
processes sample the same tokens).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._require import require
from .generation_settings import GenerationSettings

transformers = require("transformers")


def row_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (e.g. ``seed, step, index, role``), the same on every process."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def uniform(*parts: Any) -> float:
    """A number in [0, 1) fixed by ``parts`` (which micro-batches generate: not the global random state)."""
    return row_seed(*parts) / 2.0**63


class SeededSampler(transformers.LogitsProcessor):
    """Samples one token per row from ``softmax(logits / temperature)`` (top-k / top-p cut) with the row's
    generator by inverse CDF in float64; returns scores that are 0 at the choice and -inf elsewhere."""

    def __init__(
        self, generators: Sequence[torch.Generator], settings: GenerationSettings, vocab: int
    ) -> None:
        self.generators, self.settings, self.vocab = list(generators), settings, vocab

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        s = self.settings
        logits = scores.double()
        logits[:, self.vocab :] = -float("inf")  # padded head rows are no tokens
        if s.temperature == 0:
            choice = logits.argmax(-1)
        else:
            logits = logits / s.temperature
            if s.top_k:
                kth = logits.topk(min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = logits.softmax(-1)
            if s.top_p < 1:
                # keep the smallest set of most likely tokens whose mass reaches top_p (at least one)
                sorted_p, order = probs.sort(-1, descending=True)
                drop = sorted_p.cumsum(-1) - sorted_p >= s.top_p
                probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
            cdf = probs.cumsum(-1)
            u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
            u = u.to(cdf.device).unsqueeze(-1) * cdf[:, -1:]
            choice = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(cdf.shape[-1] - 1)
        out = torch.full_like(scores, -float("inf"))
        return out.scatter(-1, choice.unsqueeze(-1), 0.0)


def _eos_list(eos: int | list[int] | None) -> list[int]:
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def _config(settings: GenerationSettings, new_tokens: int, eos: list[int], pad: int):
    # Every processor a model's own generation_config could switch on is set neutral here: the samples
    # follow the model's distribution (shaped only by these settings), not its chat defaults.
    return transformers.GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=eos or None,
        pad_token_id=pad,
        use_cache=True,
    )


@torch.no_grad()
def sample_completions(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    settings: GenerationSettings,
    *,
    vocab: int,
    eos: int | list[int] | None,
    pad: int,
    context: int | None = None,
) -> list[list[int]]:
    """Each prompt's sampled completion (token ids), cut after its first end token (kept).

    The prompts are left-padded into one batch; the model runs in eval mode (restored after) under
    ``no_grad``. At most ``context - longest prompt`` new tokens are drawn when ``context`` is given.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt is empty: every row needs at least one prompt token to generate from")
    width = max(len(p) for p in prompts)
    new_tokens = settings.max_new_tokens if context is None else min(settings.max_new_tokens, context - width)
    if new_tokens < 1:
        raise ValueError(
            f"a prompt of {width} tokens leaves no room to generate within the models' context of {context} "
            "tokens: shorten the prompts (generation prompt_length, or a shorter prompt)"
        )
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    stops = _eos_list(eos)
    sampler = SeededSampler([torch.Generator().manual_seed(int(s)) for s in seeds], settings, vocab)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=_config(settings, new_tokens, stops, pad),
            logits_processor=transformers.LogitsProcessorList([sampler]),
        )
    finally:
        model.train(was_training)
    completions = []
    for row in out[:, width:].tolist():
        end = next((j for j, t in enumerate(row) if t in stops), len(row) - 1)
        completions.append(row[: end + 1])  # tokens after the first end token are generate's padding
    return completions


def pack(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad: int,
    ignore_index: int = -100,
) -> dict[str, Tensor]:
    """A right-padded batch of ``prompt + completion`` rows: ``input_ids``, ``attention_mask`` and ``labels``
    with the prompt and the padding at ``ignore_index``, so only the completion is learnt. Right padding
    keeps each row's positions those of the row alone (no ``position_ids`` needed)."""
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    labels = torch.full_like(ids, ignore_index)
    mask = torch.zeros_like(ids)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        row = torch.as_tensor([*p, *c], dtype=torch.long)
        ids[i, : row.numel()], mask[i, : row.numel()] = row, 1
        labels[i, len(p) : row.numel()] = row[len(p) :]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


__all__ = ["SeededSampler", "pack", "row_seed", "sample_completions", "uniform"]
