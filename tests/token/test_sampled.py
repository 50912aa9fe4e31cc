"""Sampled sparse teachers (Sparse Logit Sampling): estimator, unbiasedness, cache mode, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import unikd.token as T
from unikd.cache import CacheMismatchError
from unikd.token.sampled import sparse_sample
from unikd.token.sparse import TAIL_FLOOR, check_sparse_teacher


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dense(sp: T.SparseTeacher, v: int) -> torch.Tensor:
    """The estimate q̂ as a dense (N, V) float64 distribution."""
    flat = sp.flat()
    return torch.zeros(flat.ids.shape[0], v, dtype=torch.float64).scatter_add_(
        1, flat.ids, flat.logprobs.double().exp()
    )


def reference(logits: torch.Tensor, m: int, labels, tau: float, seed: int, ignore_index: int = -100):
    """Float64 loop: the same draws (same generator), counted per row with a dict."""
    v = logits.shape[-1]
    logq = logits.double().reshape(-1, v).log_softmax(1)
    logr = logq if tau == 1 else (logq / tau).log_softmax(1)
    draws = torch.multinomial(logr.float().exp(), m, replacement=True, generator=_gen(seed))
    out = torch.zeros(logq.shape[0], v, dtype=torch.float64)
    for row in range(logq.shape[0]):
        acc: dict[int, float] = {}
        for x in draws[row].tolist():
            acc[x] = acc.get(x, 0.0) + math.exp(logq[row, x] - logr[row, x])
        total = sum(acc.values())
        for x, w in acc.items():
            out[row, x] = w / total
    return out


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_matches_float64_reference(tau):
    logits = torch.randn(3, 5, 40) * 2
    labels = torch.randint(0, 40, (3, 5))
    sp = sparse_sample(logits, 7, labels=labels, proposal_temperature=tau, generator=_gen(3))
    ref = reference(logits, 7, labels, tau, seed=3)
    assert torch.allclose(_dense(sp, 40), ref, atol=1e-6)


def test_format_slots_distinct_mass_label_and_empty_tail():
    logits = torch.randn(4, 6, 50)
    labels = torch.randint(0, 50, (4, 6))
    labels[0, 0] = -100
    sp = sparse_sample(logits, 5, labels=labels, generator=_gen(0))
    assert sp.k == 6 and sp.ids.shape == (4, 6, 6) and sp.tail.shape == (4, 6)
    flat = sp.flat()
    srt = flat.ids.sort(1).values
    assert bool((srt[:, 1:] != srt[:, :-1]).all()), "ids within a row must be distinct"
    assert flat.ids.min() >= 0 and flat.ids.max() < 50
    assert torch.allclose(flat.logprobs.logsumexp(1), torch.zeros(24), atol=1e-5)
    assert bool((flat.tail == TAIL_FLOOR).all())
    kept = labels.reshape(-1) != -100
    assert bool((flat.ids == labels.reshape(-1, 1)).any(1)[kept].all()), "each kept label has a slot"
    T.token_loss("nkd", torch.randn(4, 6, 50), sp, labels)  # target-aware losses accept it


def test_estimate_is_unbiased():
    # 20,000 independent rows of one teacher distribution: the mean estimate is q within 5 standard errors.
    v, m, n = 30, 4, 20_000
    logits = torch.randn(v) * 1.5
    q = logits.double().softmax(0)
    sp = sparse_sample(logits.expand(n, v).contiguous(), m, generator=_gen(1))
    mean = _dense(sp, v).mean(0)
    se = (q * (1 - q) / (m * n)).sqrt()
    assert bool(((mean - q).abs() < 5 * se + 1e-9).all()), (mean - q).abs().max()


def test_kd_gradient_is_unbiased_and_topk_is_not():
    v, m, n = 30, 4, 20_000
    torch.manual_seed(0)
    zt = (torch.randn(v) * 2).expand(n, v).contiguous()
    zs = torch.randn(v).expand(n, v).contiguous().requires_grad_(True)

    def mean_grad(teacher) -> torch.Tensor:
        loss = T.token_loss("kd", zs, teacher, None)  # mean over rows: row gradients / n
        return torch.autograd.grad(loss, zs)[0].sum(0)

    dense = mean_grad(zt)
    sampled = mean_grad(sparse_sample(zt, m, generator=_gen(2)))
    topk = mean_grad(T.sparse_topk(zt, m + 1))
    # per-row gradient s - q̂ has variance q(1-q)/m per entry: standard error of the mean sqrt(q/(m n))
    se = (zt[0].double().softmax(0) / (m * n)).sqrt().float()
    assert bool(((sampled - dense).abs() < 5 * se + 1e-6).all())
    assert ((topk - dense).norm() / dense.norm()) > 5 * ((sampled - dense).norm() / dense.norm())


def test_reproducible_under_a_seed():
    logits = torch.randn(2, 3, 64)
    a = sparse_sample(logits, 8, generator=_gen(5))
    b = sparse_sample(logits, 8, generator=_gen(5))
    c = sparse_sample(logits, 8, generator=_gen(6))
    assert torch.equal(a.ids, b.ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(_dense(a, 64), _dense(c, 64))


@settings(max_examples=60, deadline=None)
@given(
    v=st.integers(2, 40),
    m=st.integers(1, 39),
    tau=st.sampled_from([1.0, 0.7, 3.0]),
    seed=st.integers(0, 2**16),
    with_labels=st.booleans(),
)
def test_invariants(v, m, tau, seed, with_labels):
    m = min(m, v - 1)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, v, generator=g) * 3
    labels = torch.randint(0, v, (3,), generator=g) if with_labels else None
    sp = sparse_sample(logits, m, labels=labels, proposal_temperature=tau, generator=g)
    srt = sp.ids.sort(1).values
    assert sp.k == m + 1
    assert bool((srt[:, 1:] != srt[:, :-1]).all()) and sp.ids.min() >= 0 and sp.ids.max() < v
    assert torch.allclose(sp.logprobs.logsumexp(1), torch.zeros(3), atol=1e-5)
    assert bool((sp.logprobs <= 1e-6).all())
    if labels is not None:
        assert bool((sp.ids == labels[:, None]).any(1).all())
    check_sparse_teacher(sp, (3,), v)


def test_masked_teacher_tokens_are_never_drawn():
    logits = torch.randn(200, 20)
    logits[:, :10] = float("-inf")
    sp = sparse_sample(logits, 6, generator=_gen(0))
    drawn = sp.logprobs > TAIL_FLOOR
    assert bool((sp.ids[drawn] >= 10).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 0}, "m \\(draws per token\\)"),
        ({"m": 16}, "V - 1 = 15"),
        ({"m": True}, "m \\(draws"),
        ({"m": 4, "proposal_temperature": 0.0}, "proposal_temperature"),
        ({"m": 4, "proposal_temperature": float("nan")}, "proposal_temperature"),
        ({"m": 4, "labels": torch.zeros(3, dtype=torch.long)}, "token layout"),
        ({"m": 4, "labels": torch.full((2, 3), 16)}, "outside \\[0, 15\\]"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sparse_sample(torch.randn(2, 3, 16), **kwargs)


def test_nan_teacher_is_refused():
    logits = torch.randn(2, 16)
    logits[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sparse_sample(logits, 4)
    with pytest.raises(ValueError, match="floating tensor"):
        sparse_sample(torch.ones(2, 16, dtype=torch.long), 4)


def _write(folder, logits, labels, batch, **kw):
    n, t, v = logits.shape
    with T.SparseTeacherWriter(
        folder, num_sequences=n, seq_len=t, vocab_size=v, k=6, mode="sample", identity={"teacher": "t"}, **kw
    ) as w:
        for start in range(0, n, batch):
            idx = torch.arange(start, min(start + batch, n))
            w.write(idx, logits[idx], labels=labels[idx])
    return T.SparseTeacherCache(folder)


def test_cache_sample_mode_round_trip_independent_of_batching(tmp_path):
    logits, labels = torch.randn(5, 4, 32), torch.randint(0, 32, (5, 4))
    a = _write(tmp_path / "a", logits, labels, batch=1, seed=7)
    b = _write(tmp_path / "b", logits, labels, batch=2, seed=7)
    c = _write(tmp_path / "c", logits, labels, batch=5, seed=8)
    assert a.manifest["sampling"] == {"draws": 5, "proposal_temperature": 1.0, "seed": 7}
    idx = torch.arange(5)
    ra, rb, rc = a.read(idx), b.read(idx), c.read(idx)
    assert np.array_equal(ra.ids.numpy(), rb.ids.numpy()) and torch.equal(ra.logprobs, rb.logprobs)
    assert not torch.equal(_dense(ra, 32), _dense(rc, 32))
    assert bool((ra.ids == labels[..., None]).any(-1).all())
    T.token_loss("kd", torch.randn(5, 4, 32), ra, labels)


def test_cache_sample_mode_is_part_of_its_identity(tmp_path):
    logits, labels = torch.randn(2, 3, 32), torch.randint(0, 32, (2, 3))
    _write(tmp_path, logits, labels, batch=2, seed=0)
    with pytest.raises(CacheMismatchError, match="sampling"):
        T.SparseTeacherWriter(
            tmp_path, num_sequences=2, seq_len=3, vocab_size=32, k=6, identity={"teacher": "t"}
        )
    with pytest.raises(CacheMismatchError, match="sampling"):
        T.SparseTeacherWriter(
            tmp_path,
            num_sequences=2,
            seq_len=3,
            vocab_size=32,
            k=6,
            mode="sample",
            seed=1,
            identity={"teacher": "t"},
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "topp"}, "mode must be one of"),
        ({"mode": "sample", "k": 1}, "k must be >= 2"),
        ({"mode": "sample", "seed": 1.5}, "seed must be an int"),
    ],
)
def test_writer_bad_settings(tmp_path, kwargs, match):
    args = {"num_sequences": 2, "seq_len": 3, "vocab_size": 32, "k": 6, "identity": {"teacher": "t"}}
    with pytest.raises(ValueError, match=match):
        T.SparseTeacherWriter(tmp_path, **{**args, **kwargs})
