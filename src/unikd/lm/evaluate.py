"""Validation metrics of a student LM: perplexity and the per-token KL to its teacher, chunk by chunk."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unikd.token import next_token_labels

from .capture import HiddenCapture, hidden_states, output_head


def _parts(batch: Tensor | Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, batch, None
    ids = batch["input_ids"]
    return ids, batch.get("labels", ids), batch.get("attention_mask")


def _inputs(ids: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    return {"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask.to(ids.device)}


@torch.no_grad()
def evaluate_lm(
    student: nn.Module,
    batches: Iterable[Tensor | Mapping[str, Tensor]],
    teacher: nn.Module | None = None,
    *,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Mean next-token CE (``val_loss``), ``val_ppl = exp(val_loss)`` and, with a teacher, ``val_kl``:
    the mean over tokens of KL(p_teacher || p_student) at temperature 1, in nats.

    ``batches`` yields ``(B, T)`` input-id tensors (every next token is scored) or padded batches
    ``{"input_ids", "labels", "attention_mask"}`` (next tokens whose label is -100 are not scored).
    Both models are put in eval mode and restored afterwards; logits exist one chunk of tokens at a time.
    """
    models = [m for m in (student, teacher) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    caps = [HiddenCapture(m) for m in models]
    heads = [output_head(m, role) for m, role in zip(models, ("student", "teacher"))]
    # each model runs where its weights are (a CE-only student on the GPU, its teacher still on the CPU);
    # the teacher's log-probabilities join the student's on the student's device
    devices = [next(m.parameters()).device for m in models]
    device = devices[0]
    ce_sum = kl_sum = 0.0
    tokens = 0
    try:
        for batch in batches:
            ids, labels, mask = _parts(batch)
            on = {d: ids.to(d) for d in set(devices)}  # one copy per device, not per model
            y = next_token_labels(labels.to(device))[:, :-1].reshape(-1)  # (N,) the next tokens
            keep = (y != -100).nonzero().squeeze(1)  # padding and prompts are not scored
            y = y[keep]
            hs = [
                hidden_states(m, c, _inputs(on[d], mask))[:, :-1].reshape(-1, h.shape[1])[keep.to(d)]
                for m, c, (h, _), d in zip(models, caps, heads, devices)
            ]
            for start in range(0, y.numel(), chunk_size):
                rows = slice(start, start + chunk_size)
                logp = [
                    F.log_softmax(F.linear(h[rows], w, b).float(), dim=-1).to(device)
                    for h, (w, b) in zip(hs, heads)
                ]
                ce_sum += F.nll_loss(logp[0], y[rows], reduction="sum").item()
                if teacher is not None:
                    kl_sum += F.kl_div(logp[0], logp[1], log_target=True, reduction="sum").item()
            tokens += y.numel()
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    if tokens == 0:
        raise ValueError("no validation tokens: give at least one sequence of two or more tokens")
    out = {"val_loss": ce_sum / tokens, "val_ppl": math.exp(ce_sum / tokens), "val_tokens": float(tokens)}
    if teacher is not None:
        out["val_kl"] = kl_sum / tokens
    return out


__all__ = ["evaluate_lm"]
