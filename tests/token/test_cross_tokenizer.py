"""Cross-tokenizer losses: ULD parity with the authors' computation, the span-aligned shared-vocabulary KL,
float64 references, gradcheck, properties, the alignment of two locally trained BPE tokenizers, bad inputs."""

import pytest
import torch
from _cross_reference import common_ends, span_kl_pair, uld_authors_reference, uld_pair
from hypothesis import given, settings
from hypothesis import strategies as st

import unikd.token as T

IGNORE = -100
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "distillation transfers knowledge from a teacher to a student",
    "tokenizers split words into pieces of different lengths",
    "a fox and a dog share the same brown field",
]


def _labels(b, t, gen, lo=0):
    y = torch.randint(0, 5, (b, t), generator=gen)
    for r in range(b):
        start = int(torch.randint(lo, t // 2, (1,), generator=gen))
        stop = int(torch.randint(start + 1, t + 1, (1,), generator=gen))
        y[r, :start] = IGNORE  # a prompt, then one contiguous answer, then padding
        y[r, stop:] = IGNORE
    return y


@pytest.mark.parametrize("seed", range(6))
def test_uld_matches_the_authors_computation(seed):
    g = torch.Generator().manual_seed(seed)
    b, ts_len, tt_len, vs, vt = 3, 7, 9, 11, 17
    zs = torch.randn(b, ts_len, vs, generator=g, dtype=torch.float64) * 3
    zt = torch.randn(b, tt_len, vt, generator=g, dtype=torch.float64) * 3
    ys, yt = _labels(b, ts_len, g), _labels(b, tt_len, g)
    temps = [(1.0, 1.0), (2.0, 1.0), (0.5, 3.0)][seed % 3]
    a = T.truncation_alignment(ys, yt)
    got = T.uld_loss(
        zs, zt, a, student_temperature=temps[0], teacher_temperature=temps[1], reduction="sequence_mean"
    )
    want = uld_authors_reference(zs, zt, ys, yt, ts=temps[0], tt=temps[1])
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-12)
    per = [uld_pair(zs[s, i].tolist(), zt[s, j].tolist(), *temps) for s, i, j in _triples(a)]
    mean = T.uld_loss(zs, zt, a, student_temperature=temps[0], teacher_temperature=temps[1])
    assert mean.item() == pytest.approx(sum(per) / len(per), rel=1e-12)


def _triples(a):
    return list(
        zip(a.sequence.tolist(), a.student_position.tolist(), a.teacher_position.tolist(), strict=True)
    )


def test_uld_float32_close_to_float64():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(2, 5, 13, generator=g), torch.randn(2, 6, 7, generator=g)
    a = T.truncation_alignment(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long))
    assert a.count == 10
    lo, hi = T.uld_loss(zs, zt, a), T.uld_loss(zs.double(), zt.double(), a)
    assert lo.dtype == torch.float32 and lo.item() == pytest.approx(hi.item(), rel=1e-5)


def test_gradcheck_both_losses():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    a = T.TokenAlignment(torch.tensor([0, 0, 1]), torch.tensor([0, 3, 2]), torch.tensor([1, 4, 0]), 2)
    shared = T.shared_vocab({f"t{i}": i for i in range(6)}, {f"t{i}": 7 - i for i in range(1, 6)})
    for red in ("mean", "sum", "sequence_mean"):
        assert torch.autograd.gradcheck(
            lambda x, red=red: T.uld_loss(x, zt, a, student_temperature=1.7, reduction=red), (zs,)
        )
        assert torch.autograd.gradcheck(
            lambda x, red=red: T.span_kl_loss(x, zt, a, shared, temperature=2.0, reduction=red), (zs,)
        )


dims = st.integers(2, 9)


@settings(max_examples=40, deadline=None)
@given(vs=dims, vt=dims, seed=st.integers(0, 10**6), scale=st.floats(0.1, 8.0))
def test_uld_properties(vs, vt, seed, scale):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(1, 3, vs, generator=g, dtype=torch.float64) * scale
    zt = torch.randn(1, 3, vt, generator=g, dtype=torch.float64) * scale
    a = T.truncation_alignment(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    base = T.uld_loss(zs, zt, a)
    # zero for the same distribution; symmetric; 0 <= ULD <= 2 (total variation bound)
    assert T.uld_loss(zs, zs, a).item() == pytest.approx(0.0, abs=1e-12)
    assert T.uld_loss(zt, zs, a).item() == pytest.approx(base.item(), rel=1e-10, abs=1e-12)
    assert 0.0 <= base.item() <= 2.0 + 1e-12
    # invariant to permuting either vocabulary and to padding a vocabulary with probability-0 entries
    perm_s, perm_t = torch.randperm(vs, generator=g), torch.randperm(vt, generator=g)
    assert T.uld_loss(zs[..., perm_s], zt[..., perm_t], a).item() == pytest.approx(
        base.item(), rel=1e-10, abs=1e-12
    )
    padded = torch.cat([zt, torch.full((1, 3, 4), -1e4, dtype=torch.float64)], dim=-1)
    assert T.uld_loss(zs, padded, a).item() == pytest.approx(base.item(), rel=1e-10, abs=1e-12)
    # it can fail: a uniform student against a near one-hot teacher is far from 0 (not every change of the
    # teacher changes ULD: it is flat wherever the teacher's sorted entries all exceed the student's)
    peaked = torch.zeros_like(zt)
    peaked[..., 0] = 40.0
    assert T.uld_loss(torch.zeros_like(zs), peaked, a).item() == pytest.approx(2 * (1 - 1 / vs), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 6), extra=st.integers(0, 4), seed=st.integers(0, 10**6))
def test_span_kl_reference_and_properties(n, extra, seed):
    g = torch.Generator().manual_seed(seed)
    vs, vt = n + extra + 1, n + 2
    s_ids, t_ids = torch.randperm(vs, generator=g)[:n], torch.randperm(vt, generator=g)[:n]
    shared = T.SharedVocab(s_ids, t_ids)
    zs = torch.randn(2, 3, vs, generator=g, dtype=torch.float64) * 2
    zt = torch.randn(2, 4, vt, generator=g, dtype=torch.float64) * 2
    a = T.TokenAlignment(torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1]), torch.tensor([3, 1, 2]), 2)
    got = T.span_kl_loss(zs, zt, a, shared, temperature=1.5, reduction="sum")
    want = sum(
        span_kl_pair(zs[b, i].tolist(), zt[b, j].tolist(), s_ids, t_ids, 1.5) for b, i, j in _triples(a)
    )
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
    # zero when the shared columns agree (other columns may hold anything)
    same = zs.clone()
    same[0, 2, s_ids] = zt[0, 3, t_ids] + 5.0
    same[1, 0, s_ids] = zt[1, 1, t_ids]
    same[1, 1, s_ids] = zt[1, 2, t_ids] - 1.0
    assert T.span_kl_loss(same, zt, a, shared).item() == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def two_bpes():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    def train(size):
        tok = tokenizers.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.train_from_iterator(TEXTS * 3, trainers.BpeTrainer(vocab_size=size, show_progress=False))
        return tok

    return train(60), train(140)


def test_span_alignment_of_two_bpe_tokenizers(two_bpes):
    student, teacher = two_bpes
    assert student.get_vocab() != teacher.get_vocab()
    enc_s, enc_t = student.encode_batch(TEXTS), teacher.encode_batch(TEXTS)
    a = T.span_alignment([e.offsets for e in enc_s], [e.offsets for e in enc_t])
    assert a.num_sequences == len(TEXTS)
    for b, text in enumerate(TEXTS):
        so, to = enc_s[b].offsets, enc_t[b].offsets
        rows = [(i, j) for s, i, j in _triples(a) if s == b]
        assert rows == common_ends(so, to)
        assert len(rows) < len(so) or len(rows) < len(to) or so == to
        for i, j in rows:  # both models have read the same text at each pair
            assert text[: so[i][1]] == text[: to[j][1]]
    # the shared tokens and the loss on real tokenizations
    shared = T.shared_vocab(student, teacher)
    assert 2 <= shared.size <= min(student.get_vocab_size(), teacher.get_vocab_size())
    sv, tv = student.get_vocab(), teacher.get_vocab()
    inv = {i: s for s, i in tv.items()}
    assert all(sv[inv[int(t)]] == int(s) for s, t in zip(shared.student_ids, shared.teacher_ids, strict=True))
    ls, lt = max(len(e.ids) for e in enc_s), max(len(e.ids) for e in enc_t)
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(len(TEXTS), ls, student.get_vocab_size(), generator=g, requires_grad=True)
    zt = torch.randn(len(TEXTS), lt, teacher.get_vocab_size(), generator=g)
    loss = T.create_cross_tokenizer_loss("span_kl", student_tokenizer=student, teacher_tokenizer=teacher)
    value = loss(zs, zt, a)
    value.backward()
    assert value.item() > 0 and torch.isfinite(zs.grad).all()
    assert T.create_cross_tokenizer_loss("uld")(zs, zt, a).item() > 0


def test_span_alignment_masks_and_special_tokens():
    so = [[(0, 0), (0, 3), (3, 4), (4, 8)]]  # a special token first, then "abc", "d", "efgh"
    to = [[(0, 2), (2, 4), (4, 6), (6, 8), (0, 0)]]
    a = T.span_alignment(so, to)
    assert _triples(a) == [(0, 2, 1), (0, 3, 3)]
    a = T.span_alignment(so, to, student_mask=torch.tensor([[1, 1, 1, 0]]).bool())
    assert _triples(a) == [(0, 2, 1)]
    offsets = torch.tensor(so)
    assert _triples(T.span_alignment(offsets, torch.tensor(to))) == [(0, 2, 1), (0, 3, 3)]


def test_registry_and_modules():
    assert T.list_cross_tokenizer_losses() == ["span_kl", "uld"]
    with pytest.raises(ValueError, match="Did you mean 'uld'"):
        T.create_cross_tokenizer_loss("ulds")
    with pytest.raises(ValueError, match="pass student_tokenizer= and teacher_tokenizer="):
        T.create_cross_tokenizer_loss("span_kl")
    with pytest.raises(ValueError, match="share 0 token"):
        T.create_cross_tokenizer_loss("span_kl", student_tokenizer={"a": 0}, teacher_tokenizer={"b": 0})
    with pytest.raises(ValueError, match="student_temperature must be a finite number > 0"):
        T.create_cross_tokenizer_loss("uld", student_temperature=0)
    assert "uld" not in T.list_token_losses()  # the same-tokenizer paths never receive a cross loss


def test_empty_alignment_and_non_finite():
    zs = torch.randn(2, 3, 5, requires_grad=True)
    zt = torch.randn(2, 4, 6)
    none = T.truncation_alignment(torch.full((2, 3), IGNORE), torch.zeros(2, 4, dtype=torch.long))
    loss = T.uld_loss(zs, zt, none)
    loss.backward()
    assert loss.item() == 0.0 and (zs.grad == 0).all()
    a = T.truncation_alignment(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    bad = zt.clone()
    bad[0, 1, 2] = float("inf")
    assert torch.isnan(T.uld_loss(zs, bad, a))
    bad[0, 1, 2] = 0.0
    bad[1, 3, 0] = float("nan")  # position 3 is not aligned (3 student positions): no effect
    assert torch.isfinite(T.uld_loss(zs, bad, a))


def test_bad_inputs_name_the_fix():
    zs, zt = torch.randn(2, 3, 5), torch.randn(2, 4, 6)
    a = T.truncation_alignment(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mismatched aligned lengths"):
        T.TokenAlignment(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"\(B, T, V\).*unsqueeze"):
        T.uld_loss(zs[0], zt, a)
    with pytest.raises(ValueError, match="batch sizes differ"):
        T.uld_loss(zs[:1], zt[:1], a)
    with pytest.raises(ValueError, match="teacher positions must lie in"):
        T.uld_loss(zs, zt[:, :2], a)
    with pytest.raises(ValueError, match="TokenAlignment"):
        T.uld_loss(zs, zt, None)
    with pytest.raises(ValueError, match="reduction must be"):
        T.uld_loss(zs, zt, a, reduction="batchmean")
    with pytest.raises(ValueError, match="floating tensor"):
        T.uld_loss(zs.long(), zt, a)
    with pytest.raises(ValueError, match="shared teacher ids reach 9"):
        T.span_kl_loss(zs, zt, a, T.SharedVocab(torch.tensor([0, 1]), torch.tensor([0, 9])))
    with pytest.raises(ValueError, match="same texts"):
        T.truncation_alignment(torch.zeros(2, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="same texts"):
        T.span_alignment([[(0, 1)]], [[(0, 1)], [(0, 2)]])
    with pytest.raises(ValueError, match="offsets; pass the mask"):
        T.span_alignment([[(0, 1)]], [[(0, 1)]], teacher_mask=torch.ones(1, 2, dtype=torch.bool))


def _segment(length, cuts):
    ends = sorted({c for c in cuts if 0 < c < length} | {length})
    starts = [0, *ends[:-1]]
    return list(zip(starts, ends, strict=True))


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 30),
    s_cuts=st.lists(st.integers(0, 30), max_size=12),
    t_cuts=st.lists(st.integers(0, 30), max_size=12),
)
def test_span_alignment_pairs_exactly_the_common_token_ends(length, s_cuts, t_cuts):
    so, to = _segment(length, s_cuts), _segment(length, t_cuts)
    a = T.span_alignment([so], [to])
    rows = [(i, j) for _, i, j in _triples(a)]
    assert rows == common_ends(so, to)
    assert rows[-1] == (len(so) - 1, len(to) - 1)  # the end of the text is always common
    assert T.span_alignment([so], [so]).student_position.tolist() == list(range(len(so)))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 10**6), t=st.floats(0.5, 4.0))
def test_span_kl_sequence_mean_modules_and_invariances(n, seed, t):
    g = torch.Generator().manual_seed(seed)
    vs, vt = n + 2, n + 3
    s_ids, t_ids = torch.randperm(vs, generator=g)[:n], torch.randperm(vt, generator=g)[:n]
    shared = T.SharedVocab(s_ids, t_ids)
    zs = torch.randn(3, 4, vs, generator=g, dtype=torch.float64) * 2
    zt = torch.randn(3, 5, vt, generator=g, dtype=torch.float64) * 2
    a = T.TokenAlignment(torch.tensor([0, 0, 2, 2, 2]), torch.tensor([0, 3, 1, 2, 3]),
                         torch.tensor([1, 4, 0, 2, 3]), 3)
    per = [span_kl_pair(zs[b, i].tolist(), zt[b, j].tolist(), s_ids, t_ids, t) for b, i, j in _triples(a)]
    want = (sum(per[:2]) / 2 + sum(per[2:]) / 3) / 2  # sequence 1 has no pair: it is left out
    got = T.span_kl_loss(zs, zt, a, shared, temperature=t, reduction="sequence_mean")
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert got.item() >= 0.0
    # the module equals the function; the order of the shared pairs does not matter
    module = T.SpanKLLoss(shared, temperature=t, reduction="sequence_mean")
    assert module(zs, zt, a).item() == pytest.approx(got.item(), rel=1e-12, abs=1e-14)
    perm = torch.randperm(n, generator=g)
    shuffled = T.span_kl_loss(zs, zt, a, T.SharedVocab(s_ids[perm], t_ids[perm]), temperature=t,
                              reduction="sequence_mean")
    assert shuffled.item() == pytest.approx(got.item(), rel=1e-10, abs=1e-12)
    uld = T.ULDLoss(student_temperature=t, reduction="sum")(zs, zt, a)
    assert uld.item() == pytest.approx(T.uld_loss(zs, zt, a, student_temperature=t, reduction="sum").item())
    # float32 inputs give float32 values close to the float64 ones
    lo = T.span_kl_loss(zs.float(), zt.float(), a, shared, temperature=t, reduction="sequence_mean")
    assert lo.dtype == torch.float32 and lo.item() == pytest.approx(got.item(), rel=1e-4, abs=1e-6)


def test_span_kl_bad_inputs_name_the_fix():
    zs, zt = torch.randn(1, 3, 5), torch.randn(1, 4, 6)
    a = T.TokenAlignment(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), 1)
    with pytest.raises(ValueError, match="shared must be a SharedVocab"):
        T.span_kl_loss(zs, zt, a, {"a": 0})
    with pytest.raises(ValueError, match="the KL needs at least 2"):
        T.span_kl_loss(zs, zt, a, T.SharedVocab(torch.tensor([0]), torch.tensor([0])))
    with pytest.raises(ValueError, match="shared student ids reach 7"):
        T.span_kl_loss(zs, zt, a, T.SharedVocab(torch.tensor([0, 7]), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        T.span_kl_loss(zs, zt, a, T.SharedVocab(torch.tensor([0, 1]), torch.tensor([0, 1])), temperature=0)
    with pytest.raises(ValueError, match="shared must be a SharedVocab"):
        T.SpanKLLoss(None)
    with pytest.raises(ValueError, match="on cpu but teacher_logits on meta"):
        T.uld_loss(zs, zt.to("meta"), a)
