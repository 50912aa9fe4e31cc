"""rkd_loss / RKDLoss: paper reference, mdistiller parity, gradcheck, properties, bad inputs."""

import math

import pytest
import torch
from _feature_refs import embedding_pairs, min_pair_distance, rkd_ref
from _upstream_refs import md_rkd
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unikd.losses import RKDLoss, create_loss, rkd_loss

HP = st.sampled_from([{}, {"distance_weight": 1.0, "angle_weight": 2.0}, {"distance_weight": 0.0}])


@settings(max_examples=25, deadline=None)
@given(p=embedding_pairs(), hp=HP)
def test_matches_paper_reference(p, hp):
    s, t = p
    assert rkd_loss(s, t, **hp).item() == pytest.approx(rkd_ref(s, t, **hp), rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(p=embedding_pairs(max_n=6, max_d=8))
def test_parity_with_mdistiller_values_and_gradients(p):
    # megvii-research/mdistiller @ a08d46f1, mdistiller/distillers/RKD.py (see _upstream_refs.md_rkd).
    s, t = p
    assume(min_pair_distance(s) > 1e-3)
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours, theirs = rkd_loss(a, t), md_rkd(b, t)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-13)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-11)


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: rkd_loss(x, t, distance_weight=1.0, angle_weight=2.0), (s,))
    rkd_loss(s, t).backward()
    assert t.grad is None


@settings(max_examples=20, deadline=None)
@given(
    p=embedding_pairs(min_n=3), scale=st.floats(0.1, 10.0), shift=st.floats(-3, 3), seed=st.integers(0, 99)
)
def test_invariant_to_similarity_transforms_of_the_student(p, scale, shift, seed):
    s, t = p
    assume(min_pair_distance(s) > 1e-2)
    q, _ = torch.linalg.qr(
        torch.randn(
            s.shape[1], s.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
    )
    moved = scale * s @ q + shift
    assert rkd_loss(moved, t).item() == pytest.approx(rkd_loss(s, t).item(), rel=1e-7, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(p=embedding_pairs(), scale=st.floats(0.1, 10.0))
def test_zero_for_a_scaled_copy_of_the_teacher_and_positive_otherwise(p, scale):
    s, t = p
    assume(min_pair_distance(t) > 1e-2)
    assert rkd_loss(scale * t, t).item() == pytest.approx(0.0, abs=1e-10)
    assert rkd_loss(s, t).item() >= 0.0


def test_module_contract_and_equality():
    m = create_loss("rkd", distance_weight=2.0, angle_weight=3.0)
    assert isinstance(m, RKDLoss)
    assert m.requires == ("student_embedding", "teacher_embedding")
    s, t = torch.randn(6, 8), torch.randn(6, 5)
    assert torch.equal(m(torch.randn(6, 10), s, t), rkd_loss(s, t, distance_weight=2.0, angle_weight=3.0))


def test_half_inputs_compute_in_float32_and_identical_rows_stay_finite():
    s, t = torch.randn(6, 8), torch.randn(6, 5)
    for dt in (torch.bfloat16, torch.float16):
        out = rkd_loss(s.to(dt), t.to(dt))
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(rkd_loss(s.to(dt).float(), t.to(dt).float()).item(), rel=1e-6)
    same = torch.ones(4, 3, requires_grad=True)  # collapsed embeddings: every distance is clamped
    loss = rkd_loss(same, t[:4])
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(same.grad).all()


@pytest.mark.parametrize(
    "s, t, kw, match",
    [
        (torch.randn(1, 3), torch.randn(1, 3), {}, "at least 2"),
        (torch.randn(4, 3), torch.randn(5, 3), {}, "batch mismatch"),
        (torch.randn(4, 3, 2), torch.randn(4, 3), {}, "shape \\(N, D\\)"),
        (torch.randint(0, 3, (4, 3)), torch.randn(4, 3), {}, "floating"),
        (torch.randn(4, 3), torch.randn(4, 3), {"angle_weight": float("nan")}, "angle_weight"),
    ],
)
def test_bad_inputs(s, t, kw, match):
    with pytest.raises(ValueError, match=match):
        rkd_loss(s, t, **kw)
