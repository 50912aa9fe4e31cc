"""nkd_loss / NKDLoss against a per-sample reference, gradcheck, properties and bad inputs."""

import numpy as np
import pytest
import torch
from _loss_refs import batches, mixup, nkd_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import NKDLoss, nkd_loss

Y0 = torch.zeros(4, dtype=torch.long)
HP = st.sampled_from([{}, {"temperature": 3.0, "gamma": 3.5}, {"temperature": 0.5, "gamma": 1.0}])


@settings(max_examples=25, deadline=None)
@given(b=batches(), hp=HP)
def test_matches_reference(b, hp):
    zs, zt, y = b
    assert nkd_loss(zs, zt, y, **hp).item() == pytest.approx(nkd_ref(zs, zt, y, **hp), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_gradcheck_and_teacher_detached(temperature):
    g = torch.Generator().manual_seed(2)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([1, 0, 4])
    assert torch.autograd.gradcheck(lambda a: nkd_loss(a, zt, y, temperature=temperature), (zs,))
    nkd_loss(zs, zt, y).backward()
    assert zt.grad is None


def test_module_equals_functional():
    zs, zt, y = torch.randn(4, 7), torch.randn(4, 7), torch.randint(0, 7, (4,))
    m = NKDLoss(temperature=3.0, gamma=3.5)
    assert m.requires == ("teacher_logits", "target")
    assert torch.equal(m(zs, zt, y), nkd_loss(zs, zt, y, temperature=3.0, gamma=3.5))


@settings(max_examples=20, deadline=None)
@given(b=batches(bound=1e4, dtype=np.float32), t=st.sampled_from([1.0, 3.0]))
def test_finite_for_extreme_logits(b, t):
    zs, zt, y = b
    zs.requires_grad_(True)
    loss = nkd_loss(zs, zt, y, temperature=t)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@settings(max_examples=20, deadline=None)
@given(b=batches(), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, zt, y = b
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert nkd_loss(zs + rows, zt - rows, y).item() == pytest.approx(nkd_loss(zs, zt, y).item(), rel=1e-8)


def test_one_hot_soft_labels_equal_indices_and_mixup_uses_argmax():
    zs, zt, y = torch.randn(6, 9), torch.randn(6, 9), torch.randint(0, 9, (6,))
    assert torch.allclose(nkd_loss(zs, zt, torch.nn.functional.one_hot(y, 9).float()), nkd_loss(zs, zt, y))
    soft = mixup(y, (y + 2) % 9, 0.6, 9, torch.float32)
    assert torch.allclose(nkd_loss(zs, zt, soft), nkd_loss(zs, zt, y))


def test_half_precision_inputs_compute_in_float32():
    zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    for dt in (torch.bfloat16, torch.float16):
        out = nkd_loss(zs.to(dt), zt.to(dt), y)
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(nkd_loss(zs.to(dt).float(), zt.to(dt).float(), y).item(), rel=1e-6)


@pytest.mark.parametrize(
    "zs, zt, y, kw, match",
    [
        (torch.randn(4, 5), torch.randn(3, 5), Y0, {}, "shape mismatch"),
        (torch.randn(4, 5), torch.randn(4, 6), Y0, {}, "class count mismatch"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 7, 2]), {}, "out of range"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.rand(3, 5), {}, "soft-label target must have shape"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.rand(4, 5) - 0.5, {}, "negative"),
        (torch.randn(4, 1), torch.randn(4, 1), Y0, {}, "C >= 2"),
        (
            torch.randn(4, 5),
            torch.randn(4, 5),
            Y0,
            {"temperature": -2},
            "temperature",
        ),
    ],
)
def test_bad_inputs(zs, zt, y, kw, match):
    with pytest.raises(ValueError, match=match):
        nkd_loss(zs, zt, y, **kw)
    if kw:
        with pytest.raises(ValueError, match="temperature"):
            NKDLoss(**kw)
