"""uskd_loss / USKDLoss: both rank modes against their per-sample references, gradcheck, properties."""

import numpy as np
import pytest
import torch
from _loss_refs import batches, mixup, uskd_ref, uskd_scores_separated
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unikd.losses import USKDLoss, uskd_loss

HP = st.sampled_from([{}, {"alpha": 0.1, "beta": 0.1, "mu": 0.1}, {"alpha": 0.5, "beta": 2.0, "mu": 1.0}])


@settings(max_examples=30, deadline=None)
@given(b=batches(max_c=7, bound=6.0), hp=HP, rank=st.sampled_from(["paper", "legacy", "student"]))
def test_matches_reference(b, hp, rank):
    zs, zw, y = b
    assume(uskd_scores_separated(zs, zw, y, rank))  # near-ties in the rank score would be ambiguous
    got = uskd_loss(zs, zw, y, rank=rank, **hp).item()
    assert got == pytest.approx(uskd_ref(zs, zw, y, rank=rank, **hp), rel=1e-7, abs=1e-9)


def test_rank_modes_differ_and_follow_their_formulas():
    g = torch.Generator().manual_seed(3)
    zs, zw = (
        torch.randn(16, 20, generator=g, dtype=torch.float64),
        torch.randn(16, 20, generator=g, dtype=torch.float64),
    )
    y = torch.randint(0, 20, (16,), generator=g)
    paper, legacy = uskd_loss(zs, zw, y, beta=1.0), uskd_loss(zs, zw, y, beta=1.0, rank="legacy")
    assert paper.item() == pytest.approx(uskd_ref(zs, zw, y, beta=1.0), rel=1e-7)
    assert legacy.item() == pytest.approx(uskd_ref(zs, zw, y, beta=1.0, rank="legacy"), rel=1e-7)
    assert abs(paper.item() - legacy.item()) > 1e-3


@pytest.mark.parametrize("rank", ["paper", "legacy", "student"])
def test_gradcheck_student_and_weak(rank):
    # P_t and the Zipf weights are detached by design, so gradcheck runs with alpha=0 (the detached P_t
    # would make the numerical Jacobian differ); the target term's gradient is checked below.
    g = torch.Generator().manual_seed(4)
    zs = (torch.randn(4, 6, dtype=torch.float64, generator=g) * 2).requires_grad_(True)
    zw = (torch.randn(4, 6, dtype=torch.float64, generator=g) * 2).requires_grad_(True)
    y = torch.tensor([0, 5, 2, 2])
    soft = mixup(y, torch.tensor([1, 1, 3, 0]), 0.7, 6)
    for tgt in (y, soft):
        assert uskd_scores_separated(zs, zw, tgt, rank)

        def fn(a, b, tgt=tgt):
            return uskd_loss(a, b, tgt, alpha=0.0, beta=1.0, mu=0.5, rank=rank)

        assert torch.autograd.gradcheck(fn, (zs, zw), fast_mode=True)


def test_target_term_gradient_treats_soft_target_as_constant():
    g = torch.Generator().manual_seed(5)
    zs = torch.randn(5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    zw = torch.randn(5, 6, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 5, 2, 2, 1])
    uskd_loss(zs, zw, y, alpha=1.0, beta=0.0, mu=0.0).backward()
    s = zs.detach().softmax(1)
    s_t = s.gather(1, y.view(-1, 1))
    p_t = s_t**2 + 1 - (s_t**2).mean()
    expected = -p_t * (torch.nn.functional.one_hot(y, 6) - s) / 5  # d(-P_t log S_t)/dz with P_t constant
    assert torch.allclose(zs.grad, expected, atol=1e-12)


def test_module_owns_weak_head_and_equals_functional():
    torch.manual_seed(0)
    m = USKDLoss(8, 5, alpha=0.1, beta=0.1, mu=0.1, rank="legacy")
    assert m.requires == ("student_embedding", "target") and m.embedding_tap == "uskd"
    assert isinstance(m.head, torch.nn.Linear) and m.head.in_features == 8 and m.head.out_features == 5
    zs, feats, y = torch.randn(4, 5), torch.randn(4, 8, requires_grad=True), torch.randint(0, 5, (4,))
    loss = m(zs, feats, y)
    assert torch.equal(loss, uskd_loss(zs, m.head(feats), y, alpha=0.1, beta=0.1, mu=0.1, rank="legacy"))
    loss.backward()
    assert m.head.weight.grad is not None and feats.grad is not None
    with pytest.raises(ValueError, match=r"student_embedding .* must have shape \(N, 8\).*pool_feature"):
        m(zs, torch.randn(4, 8, 2, 2), y)


@settings(max_examples=25, deadline=None)
@given(b=batches(bound=1e4, dtype=np.float32), rank=st.sampled_from(["paper", "legacy", "student"]))
def test_finite_for_extreme_logits(b, rank):
    zs, zw, y = b
    zs.requires_grad_(True)
    zw.requires_grad_(True)
    loss = uskd_loss(zs, zw, y, rank=rank)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(zs.grad).all() and torch.isfinite(zw.grad).all()


@settings(max_examples=20, deadline=None)
@given(b=batches(max_c=7, bound=6.0), shift=st.integers(-40, 40))
def test_row_constant_invariance(b, shift):
    zs, zw, y = b
    assume(uskd_scores_separated(zs, zw, y, "paper", gap=1e-4))
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert uskd_loss(zs + rows, zw - rows, y).item() == pytest.approx(uskd_loss(zs, zw, y).item(), rel=1e-7)


@settings(max_examples=20, deadline=None)
@given(b=batches(soft=False), rank=st.sampled_from(["paper", "legacy", "student"]))
def test_one_hot_soft_labels_equal_indices(b, rank):
    zs, zw, y = b
    soft = torch.nn.functional.one_hot(y, zs.shape[1]).double()
    assert uskd_loss(zs, zw, soft, rank=rank).item() == pytest.approx(
        uskd_loss(zs, zw, y, rank=rank).item(), rel=1e-9, abs=1e-12
    )


def test_two_class_soft_label_without_non_targets_is_finite():
    zs = torch.tensor([[1.0, -2.0], [0.5, 0.5]], requires_grad=True)
    zw = torch.randn(2, 2, requires_grad=True)
    soft = torch.tensor([[0.3, 0.7], [1.0, 0.0]])
    loss = uskd_loss(zs, zw, soft)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all() and torch.isfinite(zw.grad).all()


@pytest.mark.parametrize(
    "zs, zw, y, kw, match",
    [
        (torch.randn(4, 5), torch.randn(3, 5), torch.zeros(4, dtype=torch.long), {}, "shape mismatch"),
        (torch.randn(4, 5), torch.randn(4, 6), torch.zeros(4, dtype=torch.long), {}, "class count mismatch"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 5, 2]), {}, "out of range"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.rand(4, 4), {}, "soft-label target must have shape"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.rand(4, 5) - 0.5, {}, "negative"),
        (torch.randn(4, 1), torch.randn(4, 1), torch.zeros(4, dtype=torch.long), {}, "C >= 2"),
        (
            torch.randn(4, 5),
            torch.randn(4, 5),
            torch.zeros(4, dtype=torch.long),
            {"rank": "papr"},
            "unknown rank",
        ),
    ],
)
def test_bad_inputs(zs, zw, y, kw, match):
    with pytest.raises(ValueError, match=match):
        uskd_loss(zs, zw, y, **kw)


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="unknown rank"):
        USKDLoss(4, 5, rank="newest")
    with pytest.raises(ValueError, match="num_classes"):
        USKDLoss(4, 1)
    with pytest.raises(ValueError, match="in_features"):
        USKDLoss(0, 5)


def test_student_rank_ignores_the_weak_head_in_the_ranking():
    # rank="student" orders the Zipf labels by the final logits alone: with mu = 0 the weak logits no
    # longer enter the loss, while the paper's ranking still depends on them.
    g = torch.Generator().manual_seed(7)
    zs = torch.randn(16, 20, generator=g, dtype=torch.float64)
    zw1, zw2 = (torch.randn(16, 20, generator=g, dtype=torch.float64) for _ in range(2))
    y = torch.randint(0, 20, (16,), generator=g)
    kw = {"alpha": 0.1, "beta": 1.0, "mu": 0.0}
    a, b = (uskd_loss(zs, w, y, rank="student", **kw).item() for w in (zw1, zw2))
    assert a == b
    assert a == pytest.approx(uskd_ref(zs, zw1, y, rank="student", **kw), rel=1e-7)
    p1, p2 = (uskd_loss(zs, w, y, rank="paper", **kw).item() for w in (zw1, zw2))
    assert abs(p1 - p2) > 1e-4
