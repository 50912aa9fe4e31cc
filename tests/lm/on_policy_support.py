"""Prompt data for the on-policy tests: a word-level tokenizer with a chat template (no download) and
tokenized prompts of unequal lengths."""

from __future__ import annotations

import torch
from lm_support import VOCAB, transformers

# One word per token ("t0" ... "t95"); t0 pads, t1 ends a sequence, t4 / t5 open a user / assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ 't4 ' if m['role'] == 'user' else 't5 ' }}{{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}t5 {% endif %}"
)
# A tenth of the vocabulary ends a completion, so sampled completions from the untrained tiny models end
# at unequal lengths (and the kept-token counts of the micro-batches differ).
STOPS = list(range(1, 11))


def tokenizer(chat: bool = True):
    tokenizers = __import__("pytest").importorskip("tokenizers")
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t1")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def words(ids) -> str:
    return " ".join(f"t{int(i)}" for i in ids)


def prompts(n: int = 16, *, seed: int = 0, completions: bool = False) -> list[dict]:
    """Tokenized rows: a prompt of 3-6 tokens (labels -100), with a 4-token completion when asked."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = torch.randint(11, VOCAB, (3 + i % 4,), generator=g)
        c = torch.randint(11, VOCAB, (4 if completions else 0,), generator=g)
        ids = torch.cat([p, c])
        labels = torch.cat([torch.full_like(p, -100), c])
        out.append({"input_ids": ids, "labels": labels})
    return out


def generation(**kw) -> dict:
    return {"max_new_tokens": 8, "eos_token_id": STOPS, **kw}
