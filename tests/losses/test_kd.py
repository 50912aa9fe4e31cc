"""kd_loss / KDLoss against a per-sample reference, gradcheck, properties and bad inputs."""

import numpy as np
import pytest
import torch
from _loss_refs import batches, kd_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import KDLoss, kd_loss


@settings(max_examples=30, deadline=None)
@given(b=batches(), t=st.sampled_from([1.0, 4.0, 0.5]))
def test_matches_reference(b, t):
    zs, zt, _ = b
    assert kd_loss(zs, zt, temperature=t).item() == pytest.approx(kd_ref(zs, zt, t), rel=1e-9, abs=1e-12)


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: kd_loss(a, zt, temperature=2.0), (zs,))
    kd_loss(zs, zt).backward()
    assert zt.grad is None


def test_module_equals_functional_and_ignores_target():
    zs, zt = torch.randn(4, 7), torch.randn(4, 7)
    y = torch.randint(0, 7, (4,))
    m = KDLoss(temperature=3.0)
    assert m.requires == ("teacher_logits", "target")
    assert torch.equal(m(zs, zt, y), kd_loss(zs, zt, temperature=3.0))
    assert torch.equal(m(zs, zt), kd_loss(zs, zt, temperature=3.0))


@settings(max_examples=25, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False))
def test_finite_for_extreme_logits(b):
    zs, zt, _ = b
    zs.requires_grad_(True)
    loss = kd_loss(zs, zt)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, zt, _ = b
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert kd_loss(zs + rows, zt - rows).item() == pytest.approx(kd_loss(zs, zt).item(), rel=1e-9, abs=1e-9)


def test_half_precision_inputs_compute_in_float32():
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    for dt in (torch.bfloat16, torch.float16):
        out = kd_loss(zs.to(dt), zt.to(dt))
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(kd_loss(zs.to(dt).float(), zt.to(dt).float()).item(), rel=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.randn(4, 5), torch.randn(3, 5)), {}, "shape mismatch"),
        ((torch.randn(4, 5), torch.randn(4, 6)), {}, "class count mismatch"),
        ((torch.randn(4, 1), torch.randn(4, 1)), {}, "C >= 2"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"temperature": 0.0}, "temperature"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"temperature": -1.0}, "temperature"),
        ((torch.randn(4, 5, 2), torch.randn(4, 5, 2)), {}, r"shape \(N, C\)"),
        ((torch.randint(0, 3, (4, 5)), torch.randn(4, 5)), {}, "floating"),
    ],
)
def test_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd_loss(*args, **kwargs)
    if "temperature" in kwargs:
        with pytest.raises(ValueError, match="temperature"):
            KDLoss(**kwargs)
