"""jsd_loss / JSDLoss: per-sample reference, parity with TRL's generalized_jsd_loss, gradcheck, properties."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _loss_refs import batches, jsd_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import JSDLoss, jsd_loss, kd_loss, reverse_kl_loss

BETAS = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])


@settings(max_examples=30, deadline=None)
@given(b=batches(soft=False), beta=BETAS, t=st.sampled_from([1.0, 2.0]))
def test_matches_reference(b, beta, t):
    zs, zt, _ = b
    got = jsd_loss(zs, zt, beta=beta, temperature=t).item()
    assert got == pytest.approx(jsd_ref(zs, zt, beta, t), rel=1e-8, abs=1e-11)


def trl_generalized_jsd(student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0):
    """huggingface/trl commit a9fa292c, trl/trainer/gkd_trainer.py ``GKDTrainer.generalized_jsd_loss``
    (reduction "batchmean"), followed step by step: the mixture in log space by logsumexp of a stack, KL by
    ``F.kl_div(..., reduction="none", log_target=True)``, masked by labels != -100, summed over the mask."""
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture = torch.logsumexp(
            torch.stack([student_log_probs + torch.log(1 - b), teacher_log_probs + torch.log(b)]), dim=0
        )
        kl_teacher = F.kl_div(mixture, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture, student_log_probs, reduction="none", log_target=True)
        jsd = b * kl_teacher + (1 - b) * kl_student
    if labels is not None:
        mask = labels != -100
        return jsd[mask].sum() / mask.sum()
    return jsd.sum() / (jsd.size(0) * jsd.size(1))


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_parity_with_trl(beta, temperature):
    g = torch.Generator().manual_seed(3)
    zs = (torch.randn(1, 8, 11, generator=g) * 3).requires_grad_(True)
    zt = torch.randn(1, 8, 11, generator=g) * 3
    theirs = trl_generalized_jsd(zs, zt, beta=beta, temperature=temperature)
    (g_theirs,) = torch.autograd.grad(theirs, zs)
    ours = jsd_loss(zs[0], zt[0], beta=beta, temperature=temperature)
    (g_ours,) = torch.autograd.grad(ours, zs)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-7)


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    for beta in (0.0, 0.4, 1.0):
        assert torch.autograd.gradcheck(lambda a, b=beta: jsd_loss(a, zt, beta=b, temperature=1.5), (zs,))
    jsd_loss(zs, zt).backward()
    assert zt.grad is None


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), beta=st.floats(0.01, 0.99))
def test_properties(b, beta):
    zs, zt, _ = b
    value = jsd_loss(zs, zt, beta=beta).item()
    assert value >= -1e-12
    assert jsd_loss(zs, zs, beta=beta).item() == pytest.approx(0.0, abs=1e-12)
    # Swapping student and teacher mirrors the skew; the JSD is bounded by the entropy constant.
    assert jsd_loss(zt, zs, beta=1 - beta).item() == pytest.approx(value, rel=1e-7, abs=1e-12)
    assert value <= -(beta * np.log(beta) + (1 - beta) * np.log(1 - beta)) + 1e-9


@settings(max_examples=10, deadline=None)
@given(b=batches(soft=False))
def test_end_points_are_the_kl_divergences(b):
    zs, zt, _ = b
    assert jsd_loss(zs, zt, beta=0.0).item() == pytest.approx(
        kd_loss(zs, zt, temperature=1.0).item(), abs=1e-12
    )
    assert jsd_loss(zs, zt, beta=1.0).item() == pytest.approx(reverse_kl_loss(zs, zt).item(), abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False))
def test_finite_for_extreme_logits(b):
    zs, zt, _ = b
    zs.requires_grad_(True)
    loss = jsd_loss(zs, zt, beta=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def test_module_and_bad_inputs():
    zs, zt = torch.randn(4, 7), torch.randn(4, 7)
    m = JSDLoss(beta=0.3, temperature=2.0)
    assert "teacher_logits" in m.requires
    assert torch.equal(m(zs, zt), jsd_loss(zs, zt, beta=0.3, temperature=2.0))
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="beta must be a number in"):
            jsd_loss(zs, zt, beta=bad)
    with pytest.raises(ValueError, match="class count mismatch"):
        jsd_loss(zs, torch.randn(4, 6))
