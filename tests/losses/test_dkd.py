"""dkd_loss / DKDLoss against a per-sample reference, gradcheck, properties and bad inputs."""

import numpy as np
import pytest
import torch
from _loss_refs import batches, dkd_ref, mixup
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import DKDLoss, dkd_loss

Y0 = torch.zeros(4, dtype=torch.long)
HP = st.sampled_from([{}, {"alpha": 0.5, "beta": 2.0, "temperature": 1.0}, {"temperature": 0.7}])


@settings(max_examples=20, deadline=None)
@given(b=batches(), hp=HP)
def test_matches_reference(b, hp):
    zs, zt, y = b
    assert dkd_loss(zs, zt, y, **hp).item() == pytest.approx(dkd_ref(zs, zt, y, **hp), rel=1e-8, abs=1e-10)


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 3, 4])
    assert torch.autograd.gradcheck(lambda a: dkd_loss(a, zt, y, temperature=2.0), (zs,))
    dkd_loss(zs, zt, y).backward()
    assert zt.grad is None


def test_module_equals_functional():
    zs, zt, y = torch.randn(4, 7), torch.randn(4, 7), torch.randint(0, 7, (4,))
    m = DKDLoss(alpha=2.0, beta=6.0, temperature=3.0)
    assert m.requires == ("teacher_logits", "target")
    assert torch.equal(m(zs, zt, y), dkd_loss(zs, zt, y, alpha=2.0, beta=6.0, temperature=3.0))


@settings(max_examples=20, deadline=None)
@given(batches(bound=1e4, dtype=np.float32))
def test_finite_for_extreme_logits(b):
    zs, zt, y = b
    zs.requires_grad_(True)
    loss = dkd_loss(zs, zt, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@settings(max_examples=20, deadline=None)
@given(b=batches(), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, zt, y = b
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert dkd_loss(zs + rows, zt - rows, y).item() == pytest.approx(dkd_loss(zs, zt, y).item(), rel=1e-8)


def test_one_hot_soft_labels_equal_indices_and_mixup_uses_argmax():
    zs, zt, y = torch.randn(6, 9), torch.randn(6, 9), torch.randint(0, 9, (6,))
    soft = torch.nn.functional.one_hot(y, 9).float()
    assert torch.allclose(dkd_loss(zs, zt, soft), dkd_loss(zs, zt, y))
    y2 = (y + 1) % 9
    assert torch.allclose(dkd_loss(zs, zt, mixup(y, y2, 0.7, 9, torch.float32)), dkd_loss(zs, zt, y))


def test_exact_when_target_probability_rounds_to_one():
    zs = torch.tensor([[60.0, 0.0, -3.0]], requires_grad=True)
    zt = torch.tensor([[50.0, 1.0, 0.0]])
    loss = dkd_loss(zs, zt, torch.tensor([0]), temperature=1.0)
    loss.backward()
    # 1 - p_t underflows in float32 (e^-60); computed in log space the loss matches float64.
    ref = dkd_ref(zs.double(), zt.double(), torch.tensor([0]), temperature=1.0)
    assert torch.isfinite(zs.grad).all() and loss.item() == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize(
    "zs, zt, y, kw, match",
    [
        (torch.randn(4, 5), torch.randn(3, 5), Y0, {}, "shape mismatch"),
        (torch.randn(4, 5), torch.randn(4, 6), Y0, {}, "class count mismatch"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 5, 2]), {}, "out of range"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, -1, 2, 2]), {}, "out of range"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.rand(4, 6), {}, "soft-label target must have shape"),
        (torch.randn(4, 5), torch.randn(4, 5), -torch.rand(4, 5), {}, "negative"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.zeros(4), {}, "int64"),
        (torch.randn(4, 5), torch.randn(4, 5), torch.zeros(3, dtype=torch.long), {}, r"shape \(N,\)"),
        (torch.randn(4, 1), torch.randn(4, 1), Y0, {}, "C >= 2"),
        (
            torch.randn(4, 5),
            torch.randn(4, 5),
            Y0,
            {"temperature": 0},
            "temperature",
        ),
    ],
)
def test_bad_inputs(zs, zt, y, kw, match):
    with pytest.raises(ValueError, match=match):
        dkd_loss(zs, zt, y, **kw)
