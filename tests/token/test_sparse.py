"""Sparse teachers: top-k + tail bucket construction, equality with the dense loss when the tail is empty,
monotone convergence as k grows (lower bounds at temperature 1), gradcheck, validation."""

import math

import pytest
import torch
from _token_data import IGNORE, token_batches
from hypothesis import given, settings
from hypothesis import strategies as st

import unikd.token as T

SPARSE_NAMES = ["dkd", "jsd", "kd", "nkd", "reverse_kl", "taid"]


def peaked(b=3, t=5, v=40, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    zt = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    zs = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, 0] = IGNORE
    return zs, zt, labels


def test_sparse_topk_keeps_labels_and_an_exact_tail():
    zs, zt, labels = peaked()
    sp = T.sparse_topk(zt, 4, labels=labels)
    assert sp.logprobs.shape == (3, 5, 4) and sp.ids.shape == (3, 5, 4) and sp.tail.shape == (3, 5)
    logp = zt.float().log_softmax(-1)
    assert torch.allclose(sp.logprobs, logp.gather(-1, sp.ids))
    kept = labels != IGNORE
    assert torch.all((sp.ids == labels.unsqueeze(-1)).any(-1)[kept])
    mass = torch.cat([sp.logprobs, sp.tail.unsqueeze(-1)], -1).logsumexp(-1)
    assert torch.allclose(mass, torch.zeros_like(mass), atol=1e-5)
    # Without labels: the plain top-k, in descending order.
    plain = T.sparse_topk(zt, 4)
    assert torch.equal(plain.ids, logp.topk(4, -1).indices)


@pytest.mark.parametrize("name", SPARSE_NAMES)
def test_full_k_equals_the_dense_loss(name):
    zs, zt, labels = peaked(v=12)
    sp = T.sparse_topk(zt, 12, labels=labels)
    assert sp.tail.max().item() == -1e4  # the empty tail sits at the floor
    dense = T.token_loss(name, zs, zt, labels)
    assert T.token_loss(name, zs, sp, labels).item() == pytest.approx(dense.item(), rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(b=token_batches(max_v=9, ignore_prob=0.2), name=st.sampled_from(["kd", "reverse_kl", "jsd"]))
def test_lower_bound_that_rises_with_k(b, name):
    # Merging outcomes never increases an f-divergence: at temperature 1 the bucketed KL, reverse KL and JSD
    # are lower bounds of the dense ones, non-decreasing in k (the top-k sets are nested).
    zs, zt, labels = b
    v = zs.shape[-1]
    dense = T.token_loss(name, zs, zt, labels).item()
    previous = -1.0
    for k in range(1, v + 1):
        value = T.token_loss(name, zs, T.sparse_topk(zt, k), labels).item()
        assert value <= dense + 1e-6
        assert value >= previous - 1e-6
        previous = value
    assert previous == pytest.approx(dense, rel=1e-5, abs=1e-6)


def test_error_shrinks_as_k_grows():
    # A peaked teacher over a 2,000-token vocabulary, as in language models: the error falls fast with k.
    zs, zt, labels = peaked(b=2, t=8, v=2000, scale=4.0)
    dense = T.kd_loss(zs, zt, labels).item()
    errors = [
        abs(T.kd_loss(zs, T.sparse_topk(zt, k, labels=labels), labels).item() - dense) / dense
        for k in (8, 32, 128, 512)
    ]
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.05


def test_gradcheck_through_the_buckets():
    zs, zt, labels = peaked(b=1, t=3, v=7)
    zs.requires_grad_(True)
    sp = T.sparse_topk(zt, 3, labels=labels)
    for name in ("kd", "nkd", "jsd"):
        assert torch.autograd.gradcheck(
            lambda a, n=name: T.token_loss(n, a, sp, labels, temperature=1.5), (zs,)
        )


def test_validation():
    zs, zt, labels = peaked(v=10)
    sp = T.sparse_topk(zt, 3)
    with pytest.raises(ValueError, match="not among the sparse teacher's ids"):
        T.nkd_loss(zs, sp, labels)
    raw = T.SparseTeacher(
        zt.topk(3, -1).values, zt.topk(3, -1).indices, torch.zeros(3, 5, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="must be log-probabilities"):
        T.kd_loss(zs, raw, labels)
    dup = T.SparseTeacher(sp.logprobs, torch.zeros_like(sp.ids), sp.tail)
    with pytest.raises(ValueError, match="repeats a token id"):
        T.kd_loss(zs, dup, labels)
    far = T.SparseTeacher(sp.logprobs, sp.ids + 10, sp.tail)
    with pytest.raises(ValueError, match="token ids in"):
        T.kd_loss(zs, far, labels)
    with pytest.raises(ValueError, match="covers tokens of shape"):
        T.kd_loss(zs[:, :4], sp, labels[:, :4])
    with pytest.raises(ValueError, match="takes dense weak_logits"):
        T.uskd_loss(zs, sp, labels)
    with pytest.raises(ValueError, match="k must be an int"):
        T.sparse_topk(zt, 11)


def test_temperature_applies_to_the_buckets():
    zs, zt, labels = peaked(v=10)
    sp = T.sparse_topk(zt, 4, labels=labels)
    value = T.kd_loss(zs, sp, labels, temperature=2.0).item()
    assert math.isfinite(value) and value >= 0
    assert value != pytest.approx(T.kd_loss(zs, sp, labels).item())


@pytest.mark.parametrize("name", SPARSE_NAMES)
@pytest.mark.parametrize("where", ["logprobs", "tail", "student-in-the-tail"])
@pytest.mark.parametrize("value", [math.nan, -math.inf], ids=["nan", "-inf"])
def test_non_finite_sparse_teacher_or_student_gives_nan(name, where, value):
    # A NaN loss, as the dense losses (docs/losses.md). At k = V the last log-probability is tiny and the tail
    # empty, so a -inf there keeps the mass check satisfied; a student logit among the tail tokens (k < V)
    # would otherwise vanish into the tail bucket's log-sum-exp.
    zs, zt, labels = peaked(v=12)
    sp = T.sparse_topk(zt, 12 if where != "student-in-the-tail" else 4, labels=labels)
    if where == "logprobs":
        sp.logprobs[1, 2, -1] = value
    elif where == "tail":
        sp.tail[1, 2] = value
    else:
        outside = [i for i in range(12) if i not in sp.ids[1, 2].tolist()][0]
        zs[1, 2, outside] = value
    assert torch.isnan(T.token_loss(name, zs, sp, labels))


def test_infinite_sparse_log_probability_fails_the_mass_check():
    # +inf is no log-probability: the eager mass check names it (under torch.compile the loss is NaN)
    zs, zt, labels = peaked(v=12)
    sp = T.sparse_topk(zt, 4, labels=labels)
    sp.logprobs[1, 2, 0] = math.inf
    with pytest.raises(ValueError, match=r"sum to exp\(inf\) instead of 1"):
        T.kd_loss(zs, sp, labels)


@pytest.mark.parametrize("name", SPARSE_NAMES)
def test_teacher_masked_with_minus_inf_gives_probability_zero(name):
    # A teacher that masks tokens with -inf logits: sparse_topk floors their log-probabilities at TAIL_FLOOR
    # (as the cache stores them), so the sparse losses train on it; at full k the loss equals the dense loss
    # with the masked logits at the most negative finite float (the dense losses give NaN for -inf).
    zs, zt, labels = peaked(v=12)
    zt = zt.float()
    zt[..., 8:] = -math.inf
    sp = T.sparse_topk(zt, 12, labels=labels)
    assert torch.isfinite(sp.logprobs).all() and sp.logprobs.min().item() == -1e4
    zs = zs.float().requires_grad_(True)
    loss = T.token_loss(name, zs, sp, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()
    assert torch.isnan(T.token_loss(name, zs, zt, labels))
    if name in ("kd", "jsd", "taid", "dkd", "nkd"):  # reverse KL weighs log 0 by the student's mass
        finite = zt.nan_to_num(neginf=torch.finfo(torch.float32).min)
        assert loss.item() == pytest.approx(T.token_loss(name, zs, finite, labels).item(), rel=1e-5)
