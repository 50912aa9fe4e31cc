"""Bits per byte: a language model's total negative log-likelihood of a text, in bits, over the text's
UTF-8 byte count.

Perplexity is per token, so two models with different tokenizers (a teacher with 4,096 BPE tokens, a
student with 2,048) have perplexities on different scales; the likelihood of the same bytes is comparable::

    bpb = sum_t -log p(token_t | tokens_<t) / ln 2  /  bytes(scored text)

Every text is tokenized alone (:class:`~unikd.lm.cross_collator.CrossTokenizerCollator`, ``with_bytes``);
with ``prefix_id`` (e.g. the end-of-text id) each row starts with that id, so every token of the text is
predicted and the scored bytes are the whole text (up to ``max_length``). Without it the first token is
context only, and its bytes are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from .cross_collator import CrossTokenizerCollator
from .evaluate import evaluate_lm


def bits_per_byte(nll_nats: float, num_bytes: int) -> float:
    """``nll_nats / ln 2 / num_bytes``: a total NLL in nats over the bytes it was measured on."""
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, int) or num_bytes < 1:
        raise ValueError(f"num_bytes must be an int >= 1 (the bytes of the scored text), got {num_bytes!r}")
    if not math.isfinite(nll_nats) or nll_nats < 0:
        raise ValueError(f"nll_nats must be a finite total >= 0, got {nll_nats!r}")
    return nll_nats / math.log(2) / num_bytes


def evaluate_bpb(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    prefix_id: int | None = None,
    batch_size: int = 64,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """``val_bpb`` of ``model`` on ``texts`` tokenized by its ``tokenizer``, beside ``val_loss`` (nats per
    token), ``val_ppl``, ``val_tokens`` and ``val_bytes``."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings (each scored on its own)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    collate = CrossTokenizerCollator(tokenizer, max_length=max_length, prefix_id=prefix_id, with_bytes=True)
    total = [0]

    def batches() -> Iterator[dict[str, Tensor]]:
        for start in range(0, len(texts), batch_size):
            batch = collate(list(texts[start : start + batch_size]))
            total[0] += int(batch.pop("scored_bytes").sum())
            yield batch

    metrics = evaluate_lm(model, batches(), chunk_size=chunk_size)
    nll = metrics["val_loss"] * metrics["val_tokens"]
    return {**metrics, "val_bytes": float(total[0]), "val_bpb": bits_per_byte(nll, total[0])}


__all__ = ["bits_per_byte", "evaluate_bpb"]
