"""pkt_loss / PKTLoss: paper reference, mdistiller parity, gradcheck, properties, bad inputs."""

import pytest
import torch
from _feature_refs import embedding_pairs, pkt_ref
from _upstream_refs import md_pkt
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import PKTLoss, create_loss, pkt_loss


@settings(max_examples=25, deadline=None)
@given(p=embedding_pairs(min_n=1))
def test_matches_paper_reference(p):
    s, t = p
    assert pkt_loss(s, t).item() == pytest.approx(pkt_ref(s, t), rel=1e-9, abs=1e-13)


@settings(max_examples=25, deadline=None)
@given(p=embedding_pairs(min_n=1, max_n=6, max_d=8))
def test_parity_with_mdistiller_values_and_gradients(p):
    # megvii-research/mdistiller @ a08d46f1, mdistiller/distillers/PKT.py (see _upstream_refs.md_pkt).
    s, t = p
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours, theirs = pkt_loss(a, t), md_pkt(b, t)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-14)
    # Where a row's squared norm underflows to 0 their sqrt(sum(x^2)) has a NaN gradient, our norm() not.
    if bool((s.square().sum(dim=1) > torch.finfo(torch.float64).tiny).all()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: pkt_loss(x, t), (s,))
    pkt_loss(s, t).backward()
    assert t.grad is None


@settings(max_examples=20, deadline=None)
@given(p=embedding_pairs(min_n=1), seed=st.integers(0, 99))
def test_zero_on_the_teacher_nonnegative_and_permutation_invariant(p, seed):
    s, t = p
    assert pkt_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    assert pkt_loss(s, t).item() >= -1e-12
    perm = torch.randperm(s.shape[0], generator=torch.Generator().manual_seed(seed))
    assert pkt_loss(s[perm], t[perm]).item() == pytest.approx(pkt_loss(s, t).item(), rel=1e-9, abs=1e-14)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 6),
    scales=st.lists(st.floats(0.5, 20.0), min_size=6, max_size=6),
)
def test_insensitive_to_per_sample_scale(seed, n, scales):
    # Cosine kernel: only the eps added to the norms (1e-7) breaks the exact invariance. Gaussian rows keep
    # the affinities away from 0, where that eps would dominate.
    g = torch.Generator().manual_seed(seed)
    s, t = (
        torch.randn(n, 4, dtype=torch.float64, generator=g),
        torch.randn(n, 3, dtype=torch.float64, generator=g),
    )
    k = torch.tensor(scales[:n], dtype=torch.float64).unsqueeze(1)
    assert pkt_loss(s * k, t).item() == pytest.approx(pkt_loss(s, t).item(), rel=1e-5, abs=1e-9)


def test_module_contract_and_equality():
    m = create_loss("pkt")
    assert isinstance(m, PKTLoss)
    assert m.requires == ("student_embedding", "teacher_embedding")
    s, t = torch.randn(6, 8), torch.randn(6, 5)
    assert torch.equal(m(torch.randn(6, 10), s, t), pkt_loss(s, t))


def test_half_inputs_compute_in_float32():
    s, t = torch.randn(6, 8), torch.randn(6, 5)
    for dt in (torch.bfloat16, torch.float16):
        out = pkt_loss(s.to(dt), t.to(dt))
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(pkt_loss(s.to(dt).float(), t.to(dt).float()).item(), rel=1e-6)


@pytest.mark.parametrize(
    "s, t, match",
    [
        (torch.randn(4, 3), torch.randn(5, 3), "batch mismatch"),
        (torch.randn(0, 3), torch.randn(0, 3), "at least 1"),
        (torch.randn(4, 3, 2), torch.randn(4, 3), "shape \\(N, D\\)"),
        ([[1.0, 2.0]], torch.randn(1, 2), "torch.Tensor"),
    ],
)
def test_bad_inputs(s, t, match):
    with pytest.raises(ValueError, match=match):
        pkt_loss(s, t)
