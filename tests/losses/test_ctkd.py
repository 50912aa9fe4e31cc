"""CTKD: the cosine curriculum, the reversed-gradient temperature, ctkd_loss / CTKDLoss; references,
gradcheck, properties, bad inputs, and parity with the authors' training step (zhengli97/CTKD)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _logit_refs import ctkd_lambda_ref, kd_at_ref, zscore_tensor
from _loss_refs import batches
from _official_refs import official_cosine_decay, official_ctkd
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import CTKDLoss, CTKDTemperature, create_loss, ctkd_loss
from unikd.losses.ctkd import ctkd_lambda, curriculum_temperature


def _progress(epoch0: int, step: int, steps: int) -> float:
    """What the trainer passes: 0-based epoch + (step + 1) / steps."""
    return epoch0 + (step + 1) / steps


def test_curriculum_matches_the_authors_cosine_decay_at_every_step():
    for loops in (10, 5):
        for epoch0 in range(loops + 3):
            official = -official_cosine_decay(epoch0 + 1, 0.0, -1.0, loops)  # their 1-based epoch
            assert official == pytest.approx(ctkd_lambda_ref(epoch0 + 1, 1.0, 0.0, loops), abs=1e-15)
            for step in range(7):
                lam = ctkd_lambda(_progress(epoch0, step, 7), decay_epochs=loops)
                assert lam == pytest.approx(official, abs=1e-15)
    assert ctkd_lambda(0.0) == 0.0 and ctkd_lambda(1e9) == pytest.approx(1.0)
    assert ctkd_lambda(3.5, lambda_min=0.2, lambda_max=0.6) == pytest.approx(ctkd_lambda_ref(4, 0.6, 0.2))
    # the logged curve of the logit-standardization authors' CTKD run: -0.02447 at epoch 1, -0.5 at epoch 5
    assert ctkd_lambda(0.5) == pytest.approx(0.02447174185242318, rel=1e-12)
    assert ctkd_lambda(4.5) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("bad, match", [(-0.5, ">= 0"), (float("nan"), "finite"), (True, "number"),
                                        ("1", "number")])
def test_curriculum_rejects_bad_progress(bad, match):
    with pytest.raises(ValueError, match=match):
        ctkd_lambda(bad)


def test_temperature_module_reverses_and_scales_the_gradient():
    mod = CTKDTemperature()
    assert [n for n, _ in mod.named_parameters()] == ["global_t"] and mod.global_t.shape == (1,)
    tau = mod(2.5)  # epoch 3: lambda = (1 - cos(0.3 pi)) / 2
    assert tau.dim() == 0 and tau.item() == pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-6)
    assert mod.current() == pytest.approx(tau.item())
    tau.backward()
    sig = 1 / (1 + math.exp(-1))
    lam = (1 - math.cos(0.3 * math.pi)) / 2
    assert mod.global_t.grad.item() == pytest.approx(-lam * 20 * sig * (1 - sig), rel=1e-6)


def test_gradcheck_through_temperature_and_student():
    g = torch.Generator().manual_seed(7)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    gt = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    # lambda = -1 turns the reversal layer into the identity: the true derivative w.r.t. global_t
    for standardize in (False, True):
        def fn(a, b, standardize=standardize):
            return ctkd_loss(a, zt, b, 4.2, lambda_min=-1.0, lambda_max=-1.0, standardize=standardize)

        assert torch.autograd.gradcheck(fn, (zs, gt))
    ctkd_loss(zs, zt, gt, 1.0).backward()
    assert zt.grad is None


@settings(max_examples=20, deadline=None)
@given(b=batches(), raw=st.floats(-3, 3), progress=st.floats(0, 30), standardize=st.booleans())
def test_matches_kd_reference_at_the_learned_temperature(b, raw, progress, standardize):
    zs, zt, _ = b
    if standardize and not bool((zs.std(dim=1) > 1e-3).all() and (zt.std(dim=1) > 1e-3).all()):
        return
    gt = torch.tensor([raw], dtype=torch.float64)
    tau = 1 + 20 / (1 + math.exp(-raw))
    zs_r, zt_r = (zscore_tensor(zs), zscore_tensor(zt)) if standardize else (zs, zt)
    ours = ctkd_loss(zs, zt, gt, progress, standardize=standardize).item()
    assert ours == pytest.approx(kd_at_ref(zs_r, zt_r, tau), rel=1e-8, abs=1e-10)


def test_loss_module_holds_the_temperature_and_resumes_exactly():
    m = create_loss("ctkd", decay_epochs=5.0, standardize=True)
    assert isinstance(m, CTKDLoss) and m.requires == ("teacher_logits", "epoch_progress")
    assert list(m.state_dict()) == ["temperature.global_t"] and len(list(m.parameters())) == 1
    zs, zt = torch.randn(4, 7), torch.randn(4, 7)
    with torch.no_grad():
        m.temperature.global_t.fill_(-0.4)
    clone = CTKDLoss(decay_epochs=5.0, standardize=True)
    clone.load_state_dict(m.state_dict())
    assert torch.equal(clone(zs, zt, 3.2), m(zs, zt, 3.2))
    expected = ctkd_loss(zs, zt, m.temperature.global_t, 3.2, decay_epochs=5.0, standardize=True)
    assert torch.equal(m(zs, zt, 3.2), expected)


@settings(max_examples=20, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False), st.floats(-20, 20), st.booleans())
def test_finite_for_extreme_logits(b, raw, standardize):
    zs, zt, _ = b
    zs.requires_grad_(True)
    m = CTKDLoss(standardize=standardize)
    with torch.no_grad():
        m.temperature.global_t.fill_(raw)
    loss = m(zs, zt, 7.5)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(zs.grad).all() and torch.isfinite(m.temperature.global_t.grad).all()


@settings(max_examples=20, deadline=None)
@given(b=batches(soft=False), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, zt, _ = b
    gt = torch.tensor([0.7], dtype=torch.float64)
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    moved = ctkd_loss(zs + rows, zt - rows, gt, 2.0).item()
    assert moved == pytest.approx(ctkd_loss(zs, zt, gt, 2.0).item(), rel=1e-8, abs=1e-9)


def test_half_precision_inputs_compute_in_float32():
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    m = CTKDLoss()
    for dt in (torch.bfloat16, torch.float16):
        out = m(zs.to(dt), zt.to(dt), 1.0)
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(m(zs.to(dt).float(), zt.to(dt).float(), 1.0).item(), rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [({"temp_start": 0.0}, "temp_start"),
                                           ({"temp_range": -1.0}, "temp_range"),
                                           ({"decay_epochs": 0}, "decay_epochs"),
                                           ({"lambda_max": float("nan")}, "lambda_max"),
                                           ({"standardize": "yes"}, "standardize")])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CTKDLoss(**kwargs)
    with pytest.raises(ValueError, match=match):
        ctkd_loss(torch.randn(2, 3), torch.randn(2, 3), torch.ones(1), 1.0, **kwargs)


def test_bad_inputs():
    m = CTKDLoss()
    with pytest.raises(ValueError, match="shape mismatch"):
        m(torch.randn(4, 5), torch.randn(3, 5), 1.0)
    with pytest.raises(ValueError, match="epoch_progress"):
        m(torch.randn(4, 5), torch.randn(4, 5), -1.0)
    with pytest.raises(ValueError, match="global_t must be a one-element tensor"):
        ctkd_loss(torch.randn(4, 5), torch.randn(4, 5), torch.ones(2), 1.0)


# ---- parity with zhengli97/CTKD @ 7d52522: a few SGD steps of the authors' objective, side by side
@pytest.mark.parametrize("standardize", [False, True])
def test_parity_with_the_authors_training_steps(standardize):
    torch.manual_seed(0)
    steps, epochs, n, c = 3, 12, 16, 10
    head_ours = torch.nn.Linear(12, c).double()
    head_theirs = torch.nn.Linear(12, c).double()
    head_theirs.load_state_dict(head_ours.state_dict())
    ours = CTKDLoss(standardize=standardize).double()
    theirs_t = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))  # their Global_T init
    opt_ours = torch.optim.SGD([*head_ours.parameters(), *ours.parameters()], lr=0.05, momentum=0.9,
                               weight_decay=5e-4)
    opt_theirs = torch.optim.SGD([*head_theirs.parameters(), theirs_t], lr=0.05, momentum=0.9,
                                 weight_decay=5e-4)
    teacher = torch.nn.Linear(12, c).double()
    for epoch0 in range(epochs):
        for step in range(steps):
            x = torch.randn(n, 12, dtype=torch.float64)
            y = torch.randint(0, c, (n,))
            with torch.no_grad():
                zt = teacher(x) * 3
            zs_o, zs_t = head_ours(x), head_theirs(x)
            loss_o = 0.1 * F.cross_entropy(zs_o, y) + 0.9 * ours(zs_o, zt, _progress(epoch0, step, steps))
            kd, _ = official_ctkd(zs_t, zt, theirs_t, epoch0 + 1, logit_stand=standardize)
            loss_t = 0.1 * F.cross_entropy(zs_t, y) + 0.9 * kd
            opt_ours.zero_grad()
            opt_theirs.zero_grad()
            loss_o.backward()
            loss_t.backward()
            assert loss_o.item() == pytest.approx(loss_t.item(), rel=1e-12)
            assert ours.temperature.global_t.grad.item() == pytest.approx(theirs_t.grad.item(), rel=1e-9)
            assert torch.allclose(head_ours.weight.grad, head_theirs.weight.grad, rtol=1e-10, atol=1e-15)
            opt_ours.step()
            opt_theirs.step()
    assert ours.temperature.global_t.item() == pytest.approx(theirs_t.item(), rel=1e-9)
    # the temperature moved (the test is not vacuous): the reversed gradient pushed it
    assert abs(ours.temperature.global_t.item() - 1.0) > 1e-3


def test_curriculum_temperature_is_the_shared_path():
    gt = torch.tensor([0.25], requires_grad=True)
    tau = curriculum_temperature(gt, 0.5, temp_start=2.0, temp_range=3.0)
    assert tau.item() == pytest.approx(2 + 3 / (1 + math.exp(-0.25)), rel=1e-6)
