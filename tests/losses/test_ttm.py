"""ttm_loss / wttm_loss and their modules: references from the formulas, gradcheck, properties, bad inputs,
parity with the authors' code (zkxufo/TTM)."""

import numpy as np
import pytest
import torch
from _logit_refs import ttm_ref, wttm_ref
from _loss_refs import batches, kd_ref
from _official_refs import official_ttm, official_wttm
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import TTMLoss, WTTMLoss, create_loss, ttm_loss, wttm_loss

FNS = {"ttm": (ttm_loss, ttm_ref, TTMLoss), "wttm": (wttm_loss, wttm_ref, WTTMLoss)}
POWERS = st.sampled_from([1.0, 0.1, 0.3, 2.0])


@settings(max_examples=25, deadline=None)
@given(b=batches(), which=st.sampled_from(["ttm", "wttm"]), power=POWERS)
def test_matches_reference(b, which, power):
    zs, zt, _ = b
    fn, ref, _ = FNS[which]
    assert fn(zs, zt, power=power).item() == pytest.approx(ref(zs, zt, power), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("which", ["ttm", "wttm"])
@pytest.mark.parametrize("power", [0.1, 1.0])
def test_gradcheck_and_teacher_detached(which, power):
    fn = FNS[which][0]
    g = torch.Generator().manual_seed(5)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: fn(a, zt, power=power), (zs,))
    fn(zs, zt, power=power).backward()
    assert zt.grad is None


def test_transform_is_a_teacher_temperature_and_power_one_is_kd_at_t1():
    zs, zt = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    # p_t^l / sum p_t^l == softmax(z_t / T) with T = 1/l, and the student stays at temperature 1
    assert ttm_loss(zs, zt, power=0.25).item() == pytest.approx(kd_ref(zs, zt * 0.25, 1.0), rel=1e-10)
    assert ttm_loss(zs, zt).item() == pytest.approx(wttm_loss(zs, zt).item(), rel=1e-12)
    assert ttm_loss(zs, zt).item() == pytest.approx(kd_ref(zs, zt, 1.0), rel=1e-10)


def test_wttm_weights_smoother_teachers_more():
    zs = torch.zeros(2, 5, dtype=torch.float64)
    zt = torch.tensor([[8.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0]], dtype=torch.float64)
    per = [wttm_loss(zs[i:i + 1], zt[i:i + 1], power=0.2).item() / ttm_loss(zs[i:i + 1], zt[i:i + 1],
                                                                             power=0.2).item()
           for i in range(2)]
    assert 1.0 < per[0] < per[1]


def test_modules_equal_functionals_and_ignore_target():
    zs, zt, y = torch.randn(4, 7), torch.randn(4, 7), torch.randint(0, 7, (4,))
    for which, (fn, _, cls) in FNS.items():
        m = create_loss(which, power=0.2)
        assert isinstance(m, cls)
        assert m.requires == ("teacher_logits",)
        assert torch.equal(m(zs, zt, y), fn(zs, zt, power=0.2)) and torch.equal(m(zs, zt), m(zs, zt, y))


@settings(max_examples=25, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False), st.sampled_from(["ttm", "wttm"]), POWERS)
def test_finite_for_extreme_logits(b, which, power):
    zs, zt, _ = b
    zs.requires_grad_(True)
    loss = FNS[which][0](zs, zt, power=power)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), which=st.sampled_from(["ttm", "wttm"]), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, which, shift):
    zs, zt, _ = b
    fn = FNS[which][0]
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    moved = fn(zs + rows, zt - rows, power=0.3).item()
    assert moved == pytest.approx(fn(zs, zt, power=0.3).item(), rel=1e-8, abs=1e-9)


def test_half_precision_inputs_compute_in_float32():
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    for fn in (ttm_loss, wttm_loss):
        for dt in (torch.bfloat16, torch.float16):
            out = fn(zs.to(dt), zt.to(dt), power=0.3)
            assert out.dtype == torch.float32
            ref = fn(zs.to(dt).float(), zt.to(dt).float(), power=0.3)
            assert out.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("which", ["ttm", "wttm"])
@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.randn(4, 5), torch.randn(3, 5)), {}, "shape mismatch"),
        ((torch.randn(4, 5), torch.randn(4, 6)), {}, "class count mismatch"),
        ((torch.randn(4, 1), torch.randn(4, 1)), {}, "C >= 2"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"power": 0.0}, "power"),
        ((torch.randn(4, 5), torch.randn(4, 5)), {"power": -1.0}, "power"),
        ((torch.randint(0, 3, (4, 5)), torch.randn(4, 5)), {}, "floating"),
    ],
)
def test_bad_inputs(which, args, kwargs, match):
    fn, _, cls = FNS[which]
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
    if kwargs:
        with pytest.raises(ValueError, match=match):
            cls(**kwargs)


# ---- parity with zkxufo/TTM @ fe457b3, distiller_zoo/ttm.py and wttm.py
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("power", [0.1, 0.2, 0.5, 1.0])
def test_parity_with_the_authors_code(seed, power):
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(32, 100, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    zt = torch.randn(32, 100, generator=g, dtype=torch.float64) * 5
    for ours_fn, theirs_fn in ((ttm_loss, official_ttm), (wttm_loss, official_wttm)):
        ours = ours_fn(zs, zt, power=power)
        (g_ours,) = torch.autograd.grad(ours, zs)
        theirs = theirs_fn(zs, zt, power)
        (g_theirs,) = torch.autograd.grad(theirs, zs)
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=0)
        assert torch.allclose(g_ours, g_theirs, rtol=1e-10, atol=1e-17)
        a32 = zs.detach().float().requires_grad_(True)
        o32 = ours_fn(a32, zt.float(), power=power)
        (g32,) = torch.autograd.grad(o32, a32)
        assert o32.item() == pytest.approx(theirs.item(), rel=1e-5)
        assert torch.allclose(g32.double(), g_theirs, rtol=1e-4, atol=1e-8)
