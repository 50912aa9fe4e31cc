"""Teacher log-probabilities produced elsewhere (vLLM's top-k ``prompt_logprobs``) into a sparse-teacher
cache.

:func:`import_logprobs` reads JSON-lines records (format: :mod:`unikd.token.logprob_records`), keeps per
position the top-k ids with their log-probabilities and the exact rest as the tail bucket, and writes the
cache with :class:`~unikd.token.SparseTeacherWriter`, the token ids beside it
(:func:`~unikd.token.write_cache_token_ids`) and the **temperature** the log-probabilities were taken at
recorded in the manifest. That temperature cannot be read from the numbers (a softened distribution is still
a distribution), and vLLM returns either the model's raw log-probabilities or those of the distribution it
samples from, depending on its settings; so it must be stated, and a missing one is an error, never a guess.
The losses then know these are log-probabilities of ``softmax(z / T)`` (:mod:`unikd.token.tempered`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import SparseTeacherWriter
from .cache_read import check_cache_temperature
from .cache_tokens import PAD, write_cache_token_ids
from .logprob_records import parse_record, sparse_row
from .sparse import SparseTeacher

MISSING_TEMPERATURE = (
    "temperature= is required: give the sampling temperature T the teacher's log-probabilities were taken "
    "at (they are log softmax(z / T)); vLLM reports the raw model log-probabilities (T = 1) or those of the "
    "distribution it samples from (its SamplingParams.temperature) depending on its logprobs settings. "
    "It is never guessed."
)


def _records(paths: list[Path]) -> Iterator[tuple[str, Any]]:
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    where = f"{path}:{n}"
                    try:
                        yield where, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{where} is not valid JSON ({exc.msg})") from exc


def _check_temperature(record: dict[str, Any], temperature: float, where: str) -> None:
    stated = record.get("temperature") if isinstance(record, dict) else None
    if stated is not None and float(stated) != temperature:
        raise ValueError(
            f"{where} says temperature {stated} but the import was given temperature={temperature}"
        )


def _scan(paths: list[Path], temperature: float) -> tuple[list[int], int, int]:
    """Every record's sequence index (its ``index`` field or its order), the longest sequence, the most
    entries at one position; checks the records on the way."""
    indices, longest, widest = [], 0, 0
    for n, (where, record) in enumerate(_records(paths)):
        ids, rows = parse_record(record, where)
        _check_temperature(record, temperature, where)
        index = record.get("index", n)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"{where}: index must be a non-negative int, got {index!r}")
        indices.append(index)
        longest = max(longest, len(ids))
        widest = max([widest, *(len(r) for r in rows if r)])
    if not indices:
        raise ValueError(f"no records in {', '.join(map(str, paths))}")
    n = len(indices)
    if sorted(indices) != list(range(n)):
        dup = sorted({i for i in indices if indices.count(i) > 1})[:4]
        raise ValueError(
            f"the records' indices must be 0..{n - 1}, each once (duplicates {dup}, largest {max(indices)}); "
            "give each record its sequence's dataset index as 'index', or none of them"
        )
    return indices, longest, widest


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def import_logprobs(
    source: str | Path | list[str | Path],
    folder: str | Path,
    *,
    vocab_size: int,
    temperature: float | None = None,
    k: int | None = None,
    seq_len: int | None = None,
    identity: dict[str, Any] | None = None,
    dtype: str = "fp16",
    overwrite: bool = False,
) -> Path:
    """Write the sparse-teacher cache ``folder`` from JSON-lines files of top-k log-probabilities.

    ``temperature``: the sampling temperature the log-probabilities are of (required). ``k``: ids kept per
    position (default: the most any position has, at most V - 1; positions with more keep their k largest,
    the next token among them, the rest going to the tail). ``seq_len``: the cache's sequence length
    (default: the longest record). ``identity`` (default: the files' sha256) is what the cache is checked
    against when reopened.
    """
    if temperature is None:
        raise ValueError(MISSING_TEMPERATURE)
    temperature = check_cache_temperature(temperature)
    paths = [Path(p) for p in (source if isinstance(source, list) else [source])]
    indices, longest, widest = _scan(paths, temperature)
    # k = V - 1 is already exact: the tail bucket is then the one token left out
    k = k or max(1, min(widest, vocab_size - 1))
    seq_len = seq_len or longest
    if longest > seq_len:
        raise ValueError(
            f"a record has {longest} tokens but seq_len={seq_len}; raise seq_len or cut the records"
        )
    if k >= vocab_size:
        raise ValueError(
            f"k={k} must be below the vocabulary size ({vocab_size}); k = V - 1 is exact already"
        )
    ident = identity or {"source": "imported log-probabilities", "sha256": _digest(paths)}
    tokens = np.full((len(indices), seq_len), PAD, dtype=np.int32)
    with SparseTeacherWriter(
        folder,
        num_sequences=len(indices),
        seq_len=seq_len,
        vocab_size=vocab_size,
        k=k,
        identity=ident,
        dtype=dtype,
        overwrite=overwrite,
        temperature=temperature,
    ) as writer:
        for index, (where, record) in zip(indices, _records(paths)):
            ids, rows = parse_record(record, where)
            if any(not 0 <= t < vocab_size for t in ids):
                raise ValueError(f"{where}: token ids outside the vocabulary [0, {vocab_size - 1}]")
            tokens[index, : len(ids)] = ids
            if writer.complete:  # imported before: only the token ids are written again
                continue
            nxt = [*ids[1:], None]
            parts = [
                sparse_row(r, k, vocab_size, nxt[t], f"{where}, position {t + 1}") for t, r in enumerate(rows)
            ]
            parts += [sparse_row(None, k, vocab_size, None, where)] * (seq_len - len(rows))
            lp, tid, tail = (np.stack([p[j] for p in parts]) for j in range(3))
            sparse = SparseTeacher(
                torch.from_numpy(lp).float()[None],
                torch.from_numpy(tid).long()[None],
                torch.from_numpy(np.asarray(tail)).float()[None],
            )
            writer.write(torch.tensor([index]), sparse)
    write_cache_token_ids(folder, tokens)
    return Path(folder)


__all__ = ["MISSING_TEMPERATURE", "import_logprobs"]
