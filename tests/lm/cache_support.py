"""Sparse-teacher caches of a live tiny teacher over the test examples (for tests/lm/test_cached_*.py)."""

from __future__ import annotations

import torch
from lm_support import VOCAB

import unikd.token as T


def build_cache(folder, teacher, data, *, k=VOCAB - 1, mode="topk", dtype="fp32", seq_len=None):
    """The cache of ``teacher`` over ``data`` (row i = example i). k = V - 1 keeps every token but one in
    the ids and that one as the tail: the teacher exactly, as the live teacher gives it."""
    ids = [torch.as_tensor(e["input_ids"]) for e in data]
    seq_len = seq_len or max(len(x) for x in ids)
    tokens = torch.full((len(ids), seq_len), -1, dtype=torch.long)
    with T.SparseTeacherWriter(
        folder,
        num_sequences=len(ids),
        seq_len=seq_len,
        vocab_size=VOCAB,
        k=k,
        identity={"teacher": "tiny"},
        dtype=dtype,
        mode=mode,
    ) as w:
        for i, x in enumerate(ids):
            padded = torch.zeros(seq_len, dtype=torch.long)
            padded[: len(x)] = x
            tokens[i, : len(x)] = x
            with torch.no_grad():
                logits = teacher(padded[None]).logits.float()
            labels = T.next_token_labels(torch.where(tokens[i] >= 0, tokens[i], -100)[None])
            w.write(torch.tensor([i]), logits, labels=labels)
    T.write_cache_token_ids(folder, tokens)
    return folder
