"""dist_loss / DISTLoss: reference from the formula, gradcheck, properties, bad inputs, parity with the
authors' code (hunto/DIST_KD's classification submodule)."""

import numpy as np
import pytest
import torch
from _logit_refs import dist_ref
from _loss_refs import batches
from _official_refs import official_dist
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import DISTLoss, create_loss, dist_loss

HP = st.sampled_from([{}, {"temperature": 4.0}, {"beta": 2.0, "gamma": 0.5, "temperature": 0.7}])


@settings(max_examples=25, deadline=None)
@given(b=batches(max_n=5), hp=HP)
def test_matches_reference(b, hp):
    zs, zt, _ = b
    assert dist_loss(zs, zt, **hp).item() == pytest.approx(dist_ref(zs, zt, **hp), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_gradcheck_and_teacher_detached(temperature):
    g = torch.Generator().manual_seed(4)
    zs = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: dist_loss(a, zt, temperature=temperature), (zs,))
    dist_loss(zs, zt).backward()
    assert zt.grad is None


def test_module_equals_functional_and_ignores_target():
    zs, zt, y = torch.randn(6, 7), torch.randn(6, 7), torch.randint(0, 7, (6,))
    m = create_loss("dist", beta=2.0, gamma=0.5, temperature=4.0)
    assert isinstance(m, DISTLoss)
    assert m.requires == ("teacher_logits",)
    expected = dist_loss(zs, zt, beta=2.0, gamma=0.5, temperature=4.0)
    assert torch.equal(m(zs, zt, y), expected) and torch.equal(m(zs, zt), expected)


def test_perfect_match_is_near_zero_and_weights_split_the_terms():
    z = torch.randn(8, 10, dtype=torch.float64)
    # 0 but for the 1e-8 added to the norms' product (the softened rows vary by only ~1e-2 at tau = 4)
    same = dist_loss(z, z, temperature=4.0).item()
    assert same == pytest.approx(dist_ref(z, z, temperature=4.0), rel=1e-8) and 0 <= same < 1e-3
    assert dist_loss(z, z, temperature=1.0).item() < 1e-6
    zs, zt = torch.randn(8, 10, dtype=torch.float64), torch.randn(8, 10, dtype=torch.float64)
    inter = dist_loss(zs, zt, beta=1.0, gamma=0.0, temperature=2.0)
    intra = dist_loss(zs, zt, beta=0.0, gamma=1.0, temperature=2.0)
    assert torch.allclose(dist_loss(zs, zt, beta=3.0, gamma=0.5, temperature=2.0), 3 * inter + 0.5 * intra)


@settings(max_examples=25, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False), st.sampled_from([1.0, 4.0]))
def test_finite_for_extreme_logits(b, t):
    zs, zt, _ = b
    zs.requires_grad_(True)
    loss = dist_loss(zs, zt, temperature=t)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def _spread(b):
    """Drop examples whose softmax rows or columns are (nearly) constant: DIST's eps (1e-8 on the product of
    the norms) then dominates the Pearson correlation and rounding in the shifted softmax is amplified."""
    zs, zt, _ = b
    for p in (zs.softmax(dim=1), zt.softmax(dim=1)):
        if not (p.std(dim=1) > 1e-3).all():
            return False
        if p.shape[0] > 1 and not (p.std(dim=0) > 1e-3).all():
            return False
    return True


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False).filter(_spread), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, zt, _ = b
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    moved = dist_loss(zs + rows, zt - rows).item()
    assert moved == pytest.approx(dist_loss(zs, zt).item(), rel=1e-8, abs=1e-9)


def test_single_sample_intra_term_is_constant():
    zs = torch.randn(1, 6, requires_grad=True)
    zt = torch.randn(1, 6)
    loss = dist_loss(zs, zt, beta=0.0, gamma=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.equal(zs.grad, torch.zeros_like(zs))


def test_half_precision_inputs_compute_in_float32():
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    for dt in (torch.bfloat16, torch.float16):
        out = dist_loss(zs.to(dt), zt.to(dt), temperature=4.0)
        assert out.dtype == torch.float32
        ref = dist_loss(zs.to(dt).float(), zt.to(dt).float(), temperature=4.0)
        assert out.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.randn(4, 5), torch.randn(3, 5)), {}, "shape mismatch"),
        ((torch.randn(4, 5), torch.randn(4, 6)), {}, "class count mismatch"),
        ((torch.randn(4, 1), torch.randn(4, 1)), {}, "C >= 2"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"temperature": 0.0}, "temperature"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"beta": float("nan")}, "beta"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"gamma": "1"}, "gamma"),
        ((torch.randn(4, 5, 2), torch.randn(4, 5, 2)), {}, r"shape \(N, C\)"),
    ],
)
def test_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dist_loss(*args, **kwargs)
    if kwargs:
        with pytest.raises(ValueError, match=match):
            DISTLoss(**kwargs)


# ---- parity with hunto/image_classification_sota @ d9662f7, lib/models/losses/dist_kd.py
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hp", [(1.0, 1.0, 1.0), (1.0, 1.0, 4.0), (2.0, 0.5, 4.0)])
def test_parity_with_the_authors_code(seed, hp):
    beta, gamma, tau = hp
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(32, 100, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    zt = torch.randn(32, 100, generator=g, dtype=torch.float64) * 5
    ours = dist_loss(zs, zt, beta=beta, gamma=gamma, temperature=tau)
    (g_ours,) = torch.autograd.grad(ours, zs)
    theirs = official_dist(zs, zt, beta, gamma, tau)
    (g_theirs,) = torch.autograd.grad(theirs, zs)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-9, atol=1e-16)
    # float32 path
    a32 = zs.detach().float().requires_grad_(True)
    o32 = dist_loss(a32, zt.float(), beta=beta, gamma=gamma, temperature=tau)
    (g32,) = torch.autograd.grad(o32, a32)
    assert o32.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert torch.allclose(g32.double(), g_theirs, rtol=1e-3, atol=1e-7)
