"""dml_loss / DMLLoss: per-sample reference, gradcheck, properties, bad inputs, and parity with the public DML
code (the authors' TensorFlow code and the chxy95 PyTorch CIFAR-100 implementation)."""

import numpy as np
import pytest
import torch
from _loss_refs import batches
from _online_refs import dml_chxy95, dml_official_tf, dml_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import DMLLoss, create_loss, dml_loss, kd_loss


@settings(max_examples=30, deadline=None)
@given(b=batches(), t=st.sampled_from([1.0, 4.0, 0.5]))
def test_matches_reference(b, t):
    zs, zp, _ = b
    assert dml_loss(zs, zp, temperature=t).item() == pytest.approx(dml_ref(zs, zp, t), rel=1e-9, abs=1e-12)


def test_gradcheck_and_peer_detached():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zp = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: dml_loss(a, zp, temperature=2.0), (zs,))
    assert torch.autograd.gradgradcheck(lambda a: dml_loss(a, zp), (zs,))
    dml_loss(zs, zp).backward()
    assert zp.grad is None


def test_parity_with_the_official_tensorflow_code():
    # Network 1's mimicry loss and its gradient. The official code guards the log-ratio with eps = 1e-8:
    # without the guard the two computations agree to rounding; with it they agree to ~1e-5 while every
    # probability is above 1e-4 (the guard matters only for probabilities near or below 1e-8).
    g = torch.Generator().manual_seed(1)
    for n, c, scale in ((8, 100, 1.0), (5, 10, 2.0), (3, 2, 1.0), (6, 100, 4.0)):
        z1 = (torch.randn(n, c, dtype=torch.float64, generator=g) * scale).requires_grad_(True)
        z2 = torch.randn(n, c, dtype=torch.float64, generator=g) * scale
        ours = dml_loss(z1, z2)
        (g_ours,) = torch.autograd.grad(ours, z1)
        exact = dml_official_tf(z1, z2, eps=0.0)
        assert ours.item() == pytest.approx(exact.item(), rel=1e-12)
        torch.testing.assert_close(g_ours, torch.autograd.grad(exact, z1)[0], rtol=1e-10, atol=1e-14)
        if z1.softmax(1).min() > 1e-4:
            theirs = dml_official_tf(z1, z2)
            assert ours.item() == pytest.approx(theirs.item(), rel=2e-5)
            g_theirs = torch.autograd.grad(theirs, z1)[0]
            assert (g_ours - g_theirs).abs().max() <= 2e-5 * g_theirs.abs().max()


@pytest.mark.parametrize("k", [2, 3])
def test_parity_with_the_chxy95_pytorch_code(k):
    # chxy95 averages the KL over the K-1 other networks; unikd's engine averages a term over the other
    # networks of online training the same way (tests/engine/test_online.py checks the engine side).
    g = torch.Generator().manual_seed(k)
    outs = [torch.randn(6, 100, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(k)]
    for i in range(k):
        ours = sum(dml_loss(outs[i], outs[j]) for j in range(k) if j != i) / (k - 1)
        theirs = dml_chxy95(outs, i)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
        g1 = torch.autograd.grad(ours, outs[i])[0]
        g2 = torch.autograd.grad(theirs, outs[i])[0]
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-14)


def test_module_equals_functional_and_is_kd_at_the_same_temperature():
    zs, zp = torch.randn(4, 7), torch.randn(4, 7)
    m = create_loss("dml", temperature=2.0)
    assert isinstance(m, DMLLoss) and m.requires == ("teacher_logits",)
    assert torch.equal(m(zs, zp), dml_loss(zs, zp, temperature=2.0))
    torch.testing.assert_close(dml_loss(zs, zp, temperature=2.0), kd_loss(zs, zp, temperature=2.0))


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), shift=st.integers(-50, 50))
def test_zero_for_equal_logits_and_row_constant_invariance(b, shift):
    zs, zp, _ = b
    assert dml_loss(zs, zs).item() == pytest.approx(0.0, abs=1e-12)
    assert dml_loss(zs, zp).item() >= -1e-12
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert dml_loss(zs + rows, zp - rows).item() == pytest.approx(dml_loss(zs, zp).item(), rel=1e-9, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False))
def test_finite_for_extreme_logits(b):
    zs, zp, _ = b
    zs.requires_grad_(True)
    loss = dml_loss(zs, zp)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def test_half_precision_inputs_compute_in_float32():
    zs, zp = torch.randn(8, 10), torch.randn(8, 10)
    for dt in (torch.bfloat16, torch.float16):
        out = dml_loss(zs.to(dt), zp.to(dt))
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(dml_loss(zs.to(dt).float(), zp.to(dt).float()).item(), rel=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.randn(4, 5), torch.randn(3, 5)), {}, "shape mismatch"),
        ((torch.randn(4, 5), torch.randn(4, 6)), {}, "class count mismatch"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"temperature": 0.0}, "temperature"),
        ((torch.randn(4, 5, 2), torch.randn(4, 5, 2)), {}, r"shape \(N, C\)"),
        ((torch.randn(4, 5), torch.randint(0, 3, (4, 5))), {}, "peer_logits must be a floating"),
    ],
)
def test_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dml_loss(*args, **kwargs)
    if "temperature" in kwargs:
        with pytest.raises(ValueError, match="temperature"):
            DMLLoss(**kwargs)
