"""The importer of top-k log-probabilities produced elsewhere (vLLM's format) into a sparse-teacher cache."""

from __future__ import annotations

import json

import pytest
import torch

from unikd.token import import_logprobs
from unikd.token.cache_read import SparseTeacherCache

V, T = 6, 2.0


def _records(n_seq: int = 2, length: int = 5, seed: int = 0) -> tuple[list[dict], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    records, dists = [], []
    for _ in range(n_seq):
        ids = torch.randint(0, V, (length,), generator=g).tolist()
        logp = (torch.randn(length, V, generator=g, dtype=torch.float64) / T).log_softmax(-1)
        # vLLM: entry t scores token t given the tokens before it; the first entry is null
        entries = [None] + [{str(v): float(logp[t, v]) for v in range(V)} for t in range(1, length)]
        records.append({"prompt_token_ids": ids, "prompt_logprobs": entries})
        dists.append(logp.exp())
    return records, dists


def _write(tmp_path, records) -> str:
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_missing_temperature_is_an_error_not_a_guess(tmp_path):
    src = _write(tmp_path, _records()[0])
    with pytest.raises(ValueError, match="never guessed"):
        import_logprobs(src, tmp_path / "cache", vocab_size=V)
    assert not (tmp_path / "cache").exists()


def test_stated_temperature_must_match(tmp_path):
    records, _ = _records()
    records[1]["temperature"] = 1.0
    with pytest.raises(ValueError, match="temperature 1.0 but the import was given temperature=2.0"):
        import_logprobs(_write(tmp_path, records), tmp_path / "cache", vocab_size=V, temperature=T)


def test_exact_import_round_trips_the_distributions(tmp_path):
    records, dists = _records()
    folder = import_logprobs(_write(tmp_path, records), tmp_path / "cache", vocab_size=V, temperature=T)
    cache = SparseTeacherCache(folder)
    assert cache.temperature == T
    sp = cache.read(torch.tensor([0, 1]))
    for s, dist in enumerate(dists):
        length = dist.shape[0]
        for t in range(length - 1):  # cache position t predicts token t + 1 (vLLM entry t + 1)
            p = torch.zeros(V, dtype=torch.float64)
            ids = sp.ids[s, t]
            p[ids] = sp.logprobs[s, t].double().exp()
            rest = sorted(set(range(V)) - set(ids.tolist()))
            assert len(rest) == 1  # k = V - 1: the tail bucket is the one token left out
            p[rest[0]] = float(sp.tail[s, t].double().exp())
            torch.testing.assert_close(p, dist[t + 1], atol=2e-3, rtol=0)
