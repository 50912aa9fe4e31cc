"""tfkd_loss / TfKDLoss against a per-sample reference, gradcheck, properties and bad inputs."""

import numpy as np
import pytest
import torch
from _loss_refs import batches, tfkd_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import TfKDLoss, tfkd_loss

HP = st.sampled_from(
    [{}, {"correct_prob": 0.9, "temperature": 1.0}, {"correct_prob": 0.5, "temperature": 40.0}]
)


@settings(max_examples=20, deadline=None)
@given(b=batches(count=1), hp=HP)
def test_matches_reference(b, hp):
    zs, y = b
    assert tfkd_loss(zs, y, **hp).item() == pytest.approx(tfkd_ref(zs, y, **hp), rel=1e-9, abs=1e-12)


def test_defaults_follow_the_authors_cifar100_resnet18_setting():
    # a = 0.99, T = 20: the virtual teacher is softmax(p^d / 20), nearly uniform (q_t ~= 0.0105 for C=100).
    zs, y = torch.zeros(1, 100, dtype=torch.float64), torch.tensor([3])
    q_t = torch.softmax(torch.tensor([0.99 / 20] + [0.01 / 99 / 20] * 99, dtype=torch.float64), 0)[0]
    assert q_t.item() == pytest.approx(0.0105, abs=1e-4)
    assert tfkd_loss(zs, y).item() == pytest.approx(tfkd_ref(zs, y, 0.99, 20.0), rel=1e-12)


def test_gradcheck():
    g = torch.Generator().manual_seed(6)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([4, 0, 2])
    assert torch.autograd.gradcheck(lambda a: tfkd_loss(a, y, correct_prob=0.9, temperature=2.0), (zs,))


def test_module_equals_functional():
    zs, y = torch.randn(4, 7), torch.randint(0, 7, (4,))
    m = TfKDLoss(correct_prob=0.95, temperature=10.0)
    assert m.requires == ("target",)
    assert torch.equal(m(zs, y), tfkd_loss(zs, y, correct_prob=0.95, temperature=10.0))


@settings(max_examples=20, deadline=None)
@given(batches(count=1, bound=1e4, dtype=np.float32))
def test_finite_for_extreme_logits(b):
    zs, y = b
    zs.requires_grad_(True)
    loss = tfkd_loss(zs, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@settings(max_examples=20, deadline=None)
@given(b=batches(count=1), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, y = b
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert tfkd_loss(zs + rows, y).item() == pytest.approx(tfkd_loss(zs, y).item(), rel=1e-8, abs=1e-10)


def test_one_hot_soft_labels_equal_indices():
    zs, y = torch.randn(6, 9), torch.randint(0, 9, (6,))
    assert torch.allclose(tfkd_loss(zs, torch.nn.functional.one_hot(y, 9).float()), tfkd_loss(zs, y))


@pytest.mark.parametrize(
    "y, kw, match",
    [
        (torch.tensor([0, 1, 5, 2]), {}, "out of range"),
        (torch.rand(4, 6), {}, "soft-label target must have shape"),
        (torch.rand(4, 5) - 0.5, {}, "negative"),
        (torch.zeros(4, dtype=torch.long), {"correct_prob": 1.0}, "correct_prob"),
        (torch.zeros(4, dtype=torch.long), {"correct_prob": 0.0}, "correct_prob"),
        (torch.zeros(4, dtype=torch.long), {"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_inputs(y, kw, match):
    with pytest.raises(ValueError, match=match):
        tfkd_loss(torch.randn(4, 5), y, **kw)
    if kw:
        with pytest.raises(ValueError, match=match):
            TfKDLoss(**kw)
