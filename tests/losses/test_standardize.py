"""``standardize=True`` on kd_loss / dkd_loss / nkd_loss (logit standardization, Sun et al., CVPR 2024):
per-sample references, gradcheck, properties, bad inputs, and parity with the authors' code."""

import numpy as np
import pytest
import torch
from _logit_refs import zscore_tensor
from _loss_refs import batches, dkd_ref, kd_ref, nkd_ref
from _official_refs import cls_kd_nkd, ls_dkd, ls_kd, ls_normalize
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import DKDLoss, KDLoss, NKDLoss, dkd_loss, kd_loss, nkd_loss, standardize_logits


def _call(name, zs, zt, y, **hp):
    if name == "kd":
        return kd_loss(zs, zt, standardize=True, **hp)
    if name == "dkd":
        return dkd_loss(zs, zt, y, standardize=True, **hp)
    return nkd_loss(zs, zt, y, standardize=True, **hp)


HP = {"kd": [{}, {"temperature": 2.0}], "dkd": [{}, {"alpha": 9.0, "beta": 72.0, "temperature": 2.0}],
      "nkd": [{}, {"temperature": 3.0, "gamma": 3.5}]}


def _bounded(b):
    """Drop examples with a (nearly) constant row: there the z-score divides by ~1e-7."""
    zs, zt, _ = b
    return bool((zs.std(dim=1) > 1e-3).all() and (zt.std(dim=1) > 1e-3).all())


@settings(max_examples=25, deadline=None)
@given(b=batches().filter(_bounded), which=st.sampled_from(["kd", "dkd", "nkd"]), k=st.integers(0, 1))
def test_matches_reference_on_zscored_logits(b, which, k):
    zs, zt, y = b
    hp = HP[which][k]
    zs_n, zt_n = zscore_tensor(zs), zscore_tensor(zt)
    ref = {"kd": lambda: kd_ref(zs_n, zt_n, **hp), "dkd": lambda: dkd_ref(zs_n, zt_n, y, **hp),
           "nkd": lambda: nkd_ref(zs_n, zt_n, y, **hp)}[which]()
    assert _call(which, zs, zt, y, **hp).item() == pytest.approx(ref, rel=1e-7, abs=1e-9)


def test_standardize_logits_is_the_zscore_with_unbiased_std():
    z = torch.randn(5, 9, dtype=torch.float64)
    assert torch.allclose(standardize_logits(z), zscore_tensor(z), rtol=1e-12, atol=1e-12)
    assert torch.allclose(standardize_logits(z), ls_normalize(z), rtol=1e-12, atol=1e-12)
    # the analytic backward: gradcheck, and equal to autograd through the authors' normalize
    z.requires_grad_(True)
    w = torch.randn(5, 9, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: standardize_logits(a) * w, (z,))
    (ours,) = torch.autograd.grad((standardize_logits(z) * w).sum(), z)
    (theirs,) = torch.autograd.grad((ls_normalize(z) * w).sum(), z)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("which", ["kd", "dkd", "nkd"])
def test_gradcheck_and_teacher_detached(which):
    g = torch.Generator().manual_seed(3)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([1, 0, 4])
    assert torch.autograd.gradcheck(lambda a: _call(which, a, zt, y, temperature=2.0), (zs,))
    _call(which, zs, zt, y).backward()
    assert zt.grad is None


def _well_spread(b):
    """Rows whose std stays far above the eps=1e-7 of the z-score even after the 0.25 scale below."""
    zs, zt, _ = b
    return bool((zs.std(dim=1) > 0.5).all() and (zt.std(dim=1) > 0.5).all())


@settings(max_examples=20, deadline=None)
@given(b=batches(soft=False).filter(_well_spread), which=st.sampled_from(["kd", "dkd", "nkd"]),
       shift=st.integers(-50, 50), scale=st.sampled_from([0.25, 1.0, 3.0, 40.0]))
def test_invariant_to_row_shift_and_positive_scale(b, which, shift, scale):
    zs, zt, y = b
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    moved = _call(which, zs * scale + rows, zt / scale - rows, y).item()
    # equal up to the eps=1e-7 added to the std, which is not scale invariant
    assert moved == pytest.approx(_call(which, zs, zt, y).item(), rel=1e-5, abs=1e-7)


@settings(max_examples=20, deadline=None)
@given(b=batches(bound=1e4, dtype=np.float32), which=st.sampled_from(["kd", "dkd", "nkd"]))
def test_finite_for_extreme_logits(b, which):
    zs, zt, y = b
    zs.requires_grad_(True)
    loss = _call(which, zs, zt, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@pytest.mark.parametrize("which", ["kd", "dkd", "nkd"])
def test_constant_rows_stay_finite(which):
    # std 0 (e.g. a zero-initialised head): the z-score is 0 and the gradient finite (torch.std's is NaN)
    zs = torch.zeros(3, 6, requires_grad=True)
    zt = torch.randn(3, 6)
    loss = _call(which, zs, zt, torch.tensor([0, 2, 5]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def test_half_precision_inputs_compute_in_float32():
    zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    for which in ("kd", "dkd", "nkd"):
        for dt in (torch.bfloat16, torch.float16):
            out = _call(which, zs.to(dt), zt.to(dt), y)
            ref = _call(which, zs.to(dt).float(), zt.to(dt).float(), y)
            assert out.dtype == torch.float32 and out.item() == pytest.approx(ref.item(), rel=1e-6)


def test_modules_carry_the_flag():
    zs, zt, y = torch.randn(4, 7), torch.randn(4, 7), torch.randint(0, 7, (4,))
    assert torch.equal(KDLoss(temperature=2.0, standardize=True)(zs, zt, y),
                       kd_loss(zs, zt, temperature=2.0, standardize=True))
    assert torch.equal(DKDLoss(standardize=True)(zs, zt, y), dkd_loss(zs, zt, y, standardize=True))
    assert torch.equal(NKDLoss(standardize=True)(zs, zt, y), nkd_loss(zs, zt, y, standardize=True))
    assert "standardize=True" in repr(KDLoss(standardize=True))
    assert not torch.equal(KDLoss()(zs, zt), KDLoss(standardize=True)(zs, zt))


@pytest.mark.parametrize("bad", ["true", 1, None])
def test_standardize_must_be_a_bool(bad):
    zs, zt, y = torch.randn(4, 5), torch.randn(4, 5), torch.zeros(4, dtype=torch.long)
    for fn in (lambda: kd_loss(zs, zt, standardize=bad), lambda: dkd_loss(zs, zt, y, standardize=bad),
               lambda: nkd_loss(zs, zt, y, standardize=bad), lambda: KDLoss(standardize=bad)):
        with pytest.raises(ValueError, match="standardize must be True or False"):
            fn()


# ---- parity with the authors' code
def _inputs(seed, n=16, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    zt = torch.randn(n, c, generator=g, dtype=torch.float64) * scale * 1.5
    y = torch.randint(0, c, (n,), generator=g)
    return zs, zt, y


def _values_and_grads(fn, zs):
    zs.grad = None
    out = fn(zs)
    (grad,) = torch.autograd.grad(out, zs)
    return out.detach(), grad


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("temperature", [2.0, 3.0])
def test_parity_kd_with_the_authors_code(seed, temperature):
    zs, zt, _ = _inputs(seed)
    ours = _values_and_grads(lambda a: kd_loss(a, zt, temperature=temperature, standardize=True), zs)
    theirs = _values_and_grads(lambda a: ls_kd(a, zt, temperature), zs)
    assert torch.allclose(ours[0], theirs[0], rtol=1e-12, atol=0)
    assert torch.allclose(ours[1], theirs[1], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("hp", [(9.0, 72.0, 2.0), (18.0, 36.0, 3.0)])  # (1*w, beta*w, T) of their runs
def test_parity_dkd_with_the_authors_code(seed, hp):
    a, b, t = hp
    zs, zt, y = _inputs(seed)
    ours = _values_and_grads(
        lambda z: dkd_loss(z, zt, y, alpha=a, beta=b, temperature=t, standardize=True), zs
    )
    theirs = _values_and_grads(lambda z: ls_dkd(z, zt, y, a, b, t), zs)
    # the code's -1000 mask leaves exp(-1000/T * ...) ~ 1e-217 of mass on the target: far below float64 eps
    assert torch.allclose(ours[0], theirs[0], rtol=1e-10, atol=0)
    assert torch.allclose(ours[1], theirs[1], rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_nkd_with_cls_kd_on_standardized_logits(seed):
    zs, zt, y = _inputs(seed)
    ours = _values_and_grads(lambda a: nkd_loss(a, zt, y, temperature=3.0, gamma=3.5, standardize=True), zs)
    theirs = _values_and_grads(lambda a: cls_kd_nkd(ls_normalize(a), ls_normalize(zt), y, 3.0, 3.5), zs)
    assert torch.allclose(ours[0], theirs[0], rtol=1e-10, atol=0)
    assert torch.allclose(ours[1], theirs[1], rtol=1e-8, atol=1e-14)


def test_parity_in_float32():
    zs, zt, y = _inputs(5, n=64, c=100)
    zs32 = zs.detach().float().requires_grad_(True)
    zt32 = zt.float()
    pairs = [(lambda a: kd_loss(a, zt32, temperature=2.0, standardize=True), lambda a: ls_kd(a, zt32, 2.0)),
             (lambda a: dkd_loss(a, zt32, y, alpha=9.0, beta=72.0, temperature=2.0, standardize=True),
              lambda a: ls_dkd(a, zt32, y, 9.0, 72.0, 2.0))]
    for ours_fn, theirs_fn in pairs:
        ours, theirs = _values_and_grads(ours_fn, zs32), _values_and_grads(theirs_fn, zs32)
        assert torch.allclose(ours[0], theirs[0], rtol=1e-5)
        assert torch.allclose(ours[1], theirs[1], rtol=1e-4, atol=1e-7)
