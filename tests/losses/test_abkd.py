"""abkd_loss / ABKDLoss: reference from the alpha-beta divergence formula, gradcheck, properties, bad inputs,
parity with the authors' code (ghwang-s/abkd)."""

import numpy as np
import pytest
import torch
from _logit_refs import abkd_ref
from _loss_refs import batches, kd_ref
from _official_refs import official_abkd
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import ABKDLoss, abkd_loss, create_loss

# the general case and every boundary branch of the authors' code
AB = [(0.5, 0.5), (0.8, 0.3), (0.2, 1.3), (1.0, 0.0), (0.7, 0.0), (0.0, 1.0), (0.0, 0.4), (0.0, 0.0),
      (0.5, -0.5), (-0.3, 0.3)]


@settings(max_examples=40, deadline=None)
@given(b=batches(bound=8.0), ab=st.sampled_from(AB), t=st.sampled_from([1.0, 4.0]))
def test_matches_reference(b, ab, t):
    zs, zt, _ = b
    a, be = ab
    ours = abkd_loss(zs, zt, alpha=a, beta=be, temperature=t).item()
    assert ours == pytest.approx(abkd_ref(zs, zt, a, be, t), rel=1e-8, abs=1e-11)


@pytest.mark.parametrize("ab", AB)
def test_gradcheck_and_teacher_detached(ab):
    g = torch.Generator().manual_seed(6)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x: abkd_loss(x, zt, alpha=ab[0], beta=ab[1], temperature=2.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (zs,))
    abkd_loss(zs, zt).backward()
    assert zt.grad is None


def test_special_cases():
    zs, zt = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    # (1, 0): forward KL without the T^2 factor; (0, 1): reverse KL
    assert abkd_loss(zs, zt, alpha=1.0, beta=0.0, temperature=2.0).item() == pytest.approx(
        kd_ref(zs, zt, 2.0) / 4, rel=1e-10)
    assert abkd_loss(zs, zt, alpha=0.0, beta=1.0, temperature=2.0).item() == pytest.approx(
        kd_ref(zt, zs, 2.0) / 4, rel=1e-10)
    # the general case approaches the (1, 0) branch continuously
    near = abkd_loss(zs, zt, alpha=1.0, beta=1e-7, temperature=2.0).item()
    assert near == pytest.approx(abkd_loss(zs, zt, alpha=1.0, beta=0.0, temperature=2.0).item(), rel=1e-5)
    # zero for identical distributions; otherwise positive, but for the code's alpha + beta = 0 branch with
    # alpha < 0, which is alpha times a (positive) divergence
    for a, b in AB:
        assert abkd_loss(zs, zs, alpha=a, beta=b).item() == pytest.approx(0.0, abs=1e-12)
        sign = -1 if (a < 0 and a + b == 0) else 1
        assert sign * abkd_loss(zs, zt, alpha=a, beta=b).item() > 0


def test_module_equals_functional_and_ignores_target():
    zs, zt, y = torch.randn(4, 7), torch.randn(4, 7), torch.randint(0, 7, (4,))
    m = create_loss("abkd", alpha=0.8, beta=0.3, temperature=4.0)
    assert isinstance(m, ABKDLoss)
    assert m.requires == ("teacher_logits",)
    expected = abkd_loss(zs, zt, alpha=0.8, beta=0.3, temperature=4.0)
    assert torch.equal(m(zs, zt, y), expected) and torch.equal(m(zs, zt), expected)


@settings(max_examples=25, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False), st.sampled_from([(0.5, 0.5), (0.8, 0.3), (1.0, 0.0),
                                                                             (0.0, 1.0), (0.2, 1.3)]))
def test_finite_for_extreme_logits(b, ab):
    # positive exponents (the method's range); the authors' pow(softmax) has infinite gradients here
    zs, zt, _ = b
    zs.requires_grad_(True)
    loss = abkd_loss(zs, zt, alpha=ab[0], beta=ab[1])
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), shift=st.integers(-50, 50), ab=st.sampled_from(AB))
def test_row_constant_invariance(b, shift, ab):
    zs, zt, _ = b
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    kw = {"alpha": ab[0], "beta": ab[1]}
    moved = abkd_loss(zs + rows, zt - rows, **kw).item()
    assert moved == pytest.approx(abkd_loss(zs, zt, **kw).item(), rel=1e-8, abs=1e-9)


def test_half_precision_inputs_compute_in_float32():
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    for dt in (torch.bfloat16, torch.float16):
        out = abkd_loss(zs.to(dt), zt.to(dt), alpha=0.8, beta=0.3)
        assert out.dtype == torch.float32
        ref = abkd_loss(zs.to(dt).float(), zt.to(dt).float(), alpha=0.8, beta=0.3)
        assert out.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.randn(4, 5), torch.randn(3, 5)), {}, "shape mismatch"),
        ((torch.randn(4, 5), torch.randn(4, 6)), {}, "class count mismatch"),
        ((torch.randn(4, 1), torch.randn(4, 1)), {}, "C >= 2"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"temperature": 0.0}, "temperature"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"alpha": float("inf")}, "alpha"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"beta": None}, "beta"),
    ],
)
def test_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        abkd_loss(*args, **kwargs)
    if kwargs:
        with pytest.raises(ValueError, match=match):
            ABKDLoss(**kwargs)


# ---- parity with ghwang-s/abkd @ df81318, standard_classification/distiller_zoo/abkl.py
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ab", AB)
def test_parity_with_the_authors_code(seed, ab):
    a, b = ab
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(32, 100, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    zt = torch.randn(32, 100, generator=g, dtype=torch.float64) * 4
    ours = abkd_loss(zs, zt, alpha=a, beta=b, temperature=4.0)
    (g_ours,) = torch.autograd.grad(ours, zs)
    theirs = official_abkd(zs, zt, a, b, 4.0)
    (g_theirs,) = torch.autograd.grad(theirs, zs)
    assert torch.allclose(ours, theirs, rtol=1e-11, atol=1e-16)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-8, atol=1e-16)
    a32 = zs.detach().float().requires_grad_(True)
    o32 = abkd_loss(a32, zt.float(), alpha=a, beta=b, temperature=4.0)
    (g32,) = torch.autograd.grad(o32, a32)
    assert o32.item() == pytest.approx(theirs.item(), rel=1e-4)
    assert torch.allclose(g32.double(), g_theirs, rtol=1e-3, atol=1e-8)
