"""sp_loss / SPLoss: paper reference, mdistiller parity, gradcheck, properties, bad inputs."""

import pytest
import torch
from _feature_refs import arrays, sp_ref
from _upstream_refs import md_sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unikd.losses import SPLoss, create_loss, sp_loss


@st.composite
def feature_pairs(draw, max_n=4):
    n = draw(st.integers(1, max_n))
    s = arrays(draw, (n, draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))))
    t = arrays(draw, (n, draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))))
    return s, t


@settings(max_examples=25, deadline=None)
@given(p=feature_pairs())
def test_matches_paper_reference(p):
    s, t = p
    assert sp_loss(s, t).item() == pytest.approx(sp_ref(s, t), rel=1e-9, abs=1e-13)


@settings(max_examples=25, deadline=None)
@given(p=feature_pairs(max_n=5))
def test_parity_with_mdistiller_values_and_gradients(p):
    # megvii-research/mdistiller @ a08d46f1, mdistiller/distillers/SP.py (see _upstream_refs.md_sp).
    s, t = p
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours, theirs = sp_loss(a, t), md_sp([b], [t])
    ours.backward()
    theirs.sum().backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-14)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_module_sums_the_tapped_pairs_like_mdistillers_list_form():
    g = torch.Generator().manual_seed(3)
    fs = [torch.randn(4, c, h, h, dtype=torch.float64, generator=g) for c, h in ((2, 4), (3, 2))]
    ft = [torch.randn(4, c, h, h, dtype=torch.float64, generator=g) for c, h in ((5, 4), (6, 2))]
    m = create_loss("sp")
    assert (
        isinstance(m, SPLoss) and m.requires == ("student_features", "teacher_features") and m.taps == "last"
    )
    assert m(None, fs, ft).item() == pytest.approx(md_sp(fs, ft).item(), rel=1e-12)
    assert torch.equal(m(None, fs[-1:], ft[-1:]), sp_loss(fs[-1], ft[-1]))


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sp_loss(x, t), (s,))
    sp_loss(s, t).backward()
    assert t.grad is None


@settings(max_examples=20, deadline=None)
@given(p=feature_pairs(), scale=st.floats(0.01, 100.0), seed=st.integers(0, 99))
def test_zero_on_teacher_and_invariances(p, scale, seed):
    s, t = p
    assert sp_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    base = sp_loss(s, t).item()
    assert base >= 0.0
    # global scale and orthogonal maps of the flattened feature leave the Gram rows' directions unchanged
    # (away from the 1e-12 floor of the row normalisation)
    gram = s.flatten(1) @ s.flatten(1).t()
    assume(float(gram.norm(dim=1).min()) * min(scale, 1.0) ** 2 > 1e-9)
    assert sp_loss(scale * s, t).item() == pytest.approx(base, rel=1e-7, abs=1e-10)
    flat = s.flatten(1)
    q, _ = torch.linalg.qr(
        torch.randn(
            flat.shape[1], flat.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
    )
    assert sp_loss((flat @ q).view_as(s), t).item() == pytest.approx(base, rel=1e-7, abs=1e-10)
    perm = torch.randperm(s.shape[0], generator=torch.Generator().manual_seed(seed))
    assert sp_loss(s[perm], t[perm]).item() == pytest.approx(base, rel=1e-9, abs=1e-12)


def test_half_inputs_compute_in_float32():
    s, t = torch.randn(5, 3, 4, 4), torch.randn(5, 2, 2, 2)
    for dt in (torch.bfloat16, torch.float16):
        out = sp_loss(s.to(dt), t.to(dt))
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(sp_loss(s.to(dt).float(), t.to(dt).float()).item(), rel=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sp_loss(torch.randn(4, 3, 2, 2), torch.randn(5, 3, 2, 2)), "batch mismatch"),
        (lambda: sp_loss(torch.randn(4), torch.randn(4)), "2-D or 3-D or 4-D"),
        (lambda: SPLoss()(None, [], []), "non-empty list"),
        (lambda: SPLoss()(None, [torch.randn(2, 2)], [torch.randn(2, 2)] * 2), "must pair up"),
        (lambda: SPLoss()(None, torch.randn(2, 2), [torch.randn(2, 2)]), "list of tensors"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
