"""Reading top-k log-probabilities produced elsewhere (vLLM's format) into one sequence's sparse rows.

A record is one JSON object: the sequence's token ids under ``prompt_token_ids`` (or ``input_ids`` /
``token_ids``) and, aligned with them, ``prompt_logprobs`` (or ``logprobs``): entry ``t`` is the teacher's
top-k for token ``t`` given the tokens before it, ``null`` where there is none (vLLM's first entry). Each
entry is ``{token_id: logprob}`` (keys as ints, ``"123"`` or vLLM's ``"token_id:123"``; values a float or
``{"logprob": ...}`` as vLLM's ``Logprob``) or a list of ``[token_id, logprob]`` pairs or
``{"token_id": ..., "logprob": ...}`` objects. The cache's position ``t`` predicts token ``t + 1``, so it
takes entry ``t + 1``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .sparse import TAIL_FLOOR

IDS_KEYS = ("prompt_token_ids", "input_ids", "token_ids")
LOGPROB_KEYS = ("prompt_logprobs", "logprobs")
# How far above 0 a log-probability, and above 1 a position's total probability, may round.
LOGPROB_TOLERANCE = 1e-3


def _field(record: dict[str, Any], keys: tuple[str, ...], where: str) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    raise ValueError(f"{where} has none of the keys {', '.join(keys)} (it holds {sorted(record)})")


def _token_id(key: Any, where: str) -> int:
    if isinstance(key, bool):
        raise ValueError(f"{where}: {key!r} is not a token id")
    if isinstance(key, int):
        return key
    text = str(key)
    text = text[len("token_id:") :] if text.startswith("token_id:") else text
    if text.lstrip("-").isdigit():
        return int(text)
    raise ValueError(
        f"{where}: the key {key!r} is a token string, not a token id; ask for ids (vLLM's offline "
        "RequestOutput.prompt_logprobs, or return_tokens_as_token_ids=True on its OpenAI server)"
    )


def _logprob(value: Any, where: str) -> float:
    if isinstance(value, dict):
        if "logprob" not in value:
            raise ValueError(f"{where}: {value!r} has no 'logprob'")
        value = value["logprob"]
    if value is None:
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{where}: the log-probability {value!r} is not a number")
    if value > LOGPROB_TOLERANCE:
        raise ValueError(
            f"{where}: {value!r} is above 0, so not a log-probability (are these logits or probabilities?)"
        )
    return min(float(value), 0.0)


def parse_entry(entry: Any, where: str) -> dict[int, float] | None:
    """One position's ``{token_id: logprob}`` (None for ``null``)."""
    if entry is None:
        return None
    if isinstance(entry, dict):
        pairs = [(_token_id(k, where), _logprob(v, where)) for k, v in entry.items()]
    elif isinstance(entry, list):
        pairs = []
        for item in entry:
            if isinstance(item, dict):
                key = item.get("token_id", item.get("id"))
                pairs.append((_token_id(key, where), _logprob(item, where)))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((_token_id(item[0], where), _logprob(item[1], where)))
            else:
                raise ValueError(f"{where}: {item!r} is not a [token_id, logprob] pair or a dict")
    else:
        raise ValueError(f"{where}: expected a dict or list of top-k log-probabilities, got {entry!r}")
    out: dict[int, float] = {}
    for token, lp in pairs:
        if token in out:
            raise ValueError(f"{where}: token id {token} appears twice")
        out[token] = lp
    return out


def parse_record(record: Any, where: str) -> tuple[list[int], list[dict[int, float] | None]]:
    """The token ids of one record and, per cache position (``len(ids)`` of them), its top-k or None."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} is not a JSON object")
    ids = _field(record, IDS_KEYS, where)
    entries = _field(record, LOGPROB_KEYS, where)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"{where}: the token ids must be a list of ints")
    if not isinstance(entries, list) or len(entries) != len(ids):
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise ValueError(
            f"{where}: {len(ids)} token ids but {got} log-probability entries; entry t must be the teacher's "
            "top-k for token t (null where there is none, as vLLM's first prompt entry)"
        )
    rows = [parse_entry(e, f"{where}, position {t}") for t, e in enumerate(entries)]
    return ids, [*rows[1:], None]  # position t predicts token t + 1: it takes entry t + 1


def sparse_row(
    topk: dict[int, float] | None, k: int, vocab_size: int, keep: int | None, where: str
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(logprobs (k,), ids (k,), tail)`` of one position; ``topk`` None gives the row of no teacher (every
    log-probability at the floor, all mass in the tail, which the trainer refuses at a kept label).

    More than ``k`` entries keep the ``k`` largest, with ``keep`` (the next token) among them when given;
    fewer are padded with distinct unused ids of zero probability. The tail is ``log(1 - Σ p)``, in float64.
    """
    if not topk:
        return np.full(k, TAIL_FLOOR), np.arange(k), 0.0
    bad = [t for t in topk if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"{where}: token ids {bad[:4]} are outside the vocabulary [0, {vocab_size - 1}]")
    items = sorted(topk.items(), key=lambda kv: -kv[1])
    if len(items) > k:
        chosen = items[:k]
        if keep is not None and keep in topk and all(t != keep for t, _ in chosen):
            chosen[-1] = (keep, topk[keep])
        items = chosen
    total = math.fsum(math.exp(lp) for _, lp in topk.items())
    if total > 1 + LOGPROB_TOLERANCE:
        raise ValueError(
            f"{where}: the probabilities sum to {total:.4f} > 1; these are not log-probabilities of one "
            "distribution (logits? several temperatures mixed?)"
        )
    kept = math.fsum(math.exp(lp) for _, lp in items)
    rest = 1.0 - kept
    tail = math.log(rest) if rest > math.exp(TAIL_FLOOR) else TAIL_FLOOR
    used = {t for t, _ in items}
    pad: list[int] = []
    candidate = 0
    while len(pad) < k - len(items):  # the smallest unused ids (at most k of them are taken)
        if candidate not in used:
            pad.append(candidate)
        candidate += 1
    ids = np.array([t for t, _ in items] + pad)
    values = np.array([max(lp, TAIL_FLOOR) for _, lp in items] + [TAIL_FLOOR] * len(pad))
    return values, ids, max(tail, TAIL_FLOOR)


__all__ = ["IDS_KEYS", "LOGPROB_KEYS", "parse_entry", "parse_record", "sparse_row"]
