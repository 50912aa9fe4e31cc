"""bdkd_loss / bdkd_peer_loss / BDKDLoss against per-sample float64 references, gradcheck, properties of the
entropy-gap weighting, and bad inputs. No official BD-KD code is public (docs/losses.md), so there is no
parity test; the references follow the formulas documented in unikd.losses.bdkd."""

import math

import numpy as np
import pytest
import torch
from _loss_refs import batches, rows
from _online_refs import bdkd_peer_ref, bdkd_ref, bdkd_weight_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import BDKDLoss, bdkd_loss, bdkd_peer_loss, create_loss, dml_loss
from unikd.losses.bdkd import bdkd_weights


@settings(max_examples=40, deadline=None)
@given(b=batches(), t=st.sampled_from([1.0, 4.0, 0.5]), g=st.sampled_from([0.0, 1.0, 3.0]))
def test_matches_reference(b, t, g):
    zs, zt, _ = b
    got = bdkd_loss(zs, zt, temperature=t, gap_scale=g).item()
    assert got == pytest.approx(bdkd_ref(zs, zt, t, g), rel=1e-9, abs=1e-12)
    w = bdkd_weights(zs, zt, temperature=t, gap_scale=g)
    expected = [bdkd_weight_ref(s, q, t, g) for s, q in zip(rows(zs), rows(zt))]
    assert w.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(b=batches(), t=st.sampled_from([1.0, 2.0]))
def test_peer_side_matches_reference_and_is_the_dml_term(b, t):
    zp, zs, _ = b
    got = bdkd_peer_loss(zp, zs, temperature=t)
    assert got.item() == pytest.approx(bdkd_peer_ref(zp, zs, t), rel=1e-9, abs=1e-12)
    assert got.item() == pytest.approx(dml_loss(zp, zs, temperature=t).item(), rel=1e-12, abs=1e-14)


def test_gradcheck_both_sides_and_other_network_detached():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    # w is detached (a sample weight), so the implemented gradient is the total derivative only where w does
    # not move: gap_scale = 0 (w = 1/2); test_weight_is_treated_as_a_constant covers gap_scale > 0.
    assert torch.autograd.gradcheck(lambda a: bdkd_loss(a, zt, temperature=2.0, gap_scale=0.0), (zs,))
    assert torch.autograd.gradcheck(lambda a: bdkd_peer_loss(a, zs, temperature=2.0), (zt,))
    bdkd_loss(zs, zt).backward()
    assert zt.grad is None
    zs.grad = None
    bdkd_peer_loss(zt, zs).backward()
    assert zs.grad is None and zt.grad is not None


def test_weight_is_treated_as_a_constant():
    # The gradient equals the gradient of the mixture with w frozen at its value (w is detached).
    g = torch.Generator().manual_seed(3)
    zs = torch.randn(5, 8, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(5, 8, dtype=torch.float64, generator=g) * 2
    w = bdkd_weights(zs, zt, gap_scale=2.0)
    ls, lt = zs.log_softmax(1), zt.log_softmax(1)
    frozen = ((1 - w) * (lt.exp() * (lt - ls)).sum(1) + w * (ls.exp() * (ls - lt)).sum(1)).mean()
    g1 = torch.autograd.grad(bdkd_loss(zs, zt, gap_scale=2.0), zs)[0]
    g2 = torch.autograd.grad(frozen, zs)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(b=batches(soft=False))
def test_limits_of_the_weighting(b):
    zs, zt, _ = b
    ls, lt = zs.log_softmax(1), zt.log_softmax(1)
    fkl = (lt.exp() * (lt - ls)).sum(1)  # (N,)
    rkl = (ls.exp() * (ls - lt)).sum(1)
    # gap_scale = 0: the symmetric mix (half the Jeffreys divergence)
    assert bdkd_loss(zs, zt, gap_scale=0.0).item() == pytest.approx(0.5 * (fkl + rkl).mean().item(), rel=1e-9,
                                                                      abs=1e-12)
    # a huge gap_scale: a hard switch on the sign of the entropy gap (rows with a clear gap)
    hs, ht = -(ls.exp() * ls).sum(1), -(lt.exp() * lt).sum(1)
    clear = (hs - ht).abs() > 1e-3
    hard = torch.where(hs > ht, rkl, fkl)
    per_row = [bdkd_loss(zs[i:i + 1], zt[i:i + 1], gap_scale=1e6).item() for i in range(len(zs))]
    for i in torch.nonzero(clear).flatten().tolist():
        assert per_row[i] == pytest.approx(hard[i].item(), rel=1e-9, abs=1e-12)
    # non-negative, zero when the predictions agree
    assert bdkd_loss(zs, zt).item() >= -1e-12
    assert bdkd_loss(zs, zs).item() == pytest.approx(0.0, abs=1e-12)


def test_a_less_confident_student_gets_more_reverse_kl():
    sharp = torch.tensor([[8.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    flat = torch.tensor([[0.5, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert bdkd_weights(flat, sharp).item() > 0.5 > bdkd_weights(sharp, flat).item()
    assert bdkd_weights(flat, flat).item() == pytest.approx(0.5)


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, zt, _ = b
    r = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert bdkd_loss(zs + r, zt - r).item() == pytest.approx(bdkd_loss(zs, zt).item(), rel=1e-9, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False))
def test_finite_for_extreme_logits(b):
    zs, zt, _ = b
    zs.requires_grad_(True)
    loss = bdkd_loss(zs, zt, gap_scale=5.0)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()
    assert math.isfinite(bdkd_peer_loss(zs.detach(), zt).item())


def test_module_roles():
    zs, zt = torch.randn(4, 7), torch.randn(4, 7)
    student = create_loss("bdkd", temperature=2.0, gap_scale=0.5)
    assert isinstance(student, BDKDLoss) and student.role == "student"
    assert student.requires == ("teacher_logits",)
    assert torch.equal(student(zs, zt), bdkd_loss(zs, zt, temperature=2.0, gap_scale=0.5))
    peer = create_loss("bdkd", role="peer", temperature=2.0)
    assert torch.equal(peer(zt, zs), bdkd_peer_loss(zt, zs, temperature=2.0))


def test_half_precision_inputs_compute_in_float32():
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    for dt in (torch.bfloat16, torch.float16):
        out = bdkd_loss(zs.to(dt), zt.to(dt))
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(bdkd_loss(zs.to(dt).float(), zt.to(dt).float()).item(), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"gap_scale": -1.0}, "gap_scale must be >= 0"),
        ({"gap_scale": float("inf")}, "gap_scale must be a finite number"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    zs, zt = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match=match):
        bdkd_loss(zs, zt, **kwargs)
    with pytest.raises(ValueError, match=match):
        BDKDLoss(**kwargs)


def test_bad_inputs_and_role():
    with pytest.raises(ValueError, match="shape mismatch"):
        bdkd_loss(torch.randn(4, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="class count mismatch"):
        bdkd_peer_loss(torch.randn(4, 5), torch.randn(4, 6))
    with pytest.raises(ValueError, match="role must be one of student, peer"):
        BDKDLoss(role="teacher")
