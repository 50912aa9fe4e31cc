"""reverse_kl_loss / ReverseKLLoss: per-sample reference, parity with SakanaAI/TAID's reverse_kl, gradcheck,
properties and bad inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _loss_refs import batches, reverse_kl_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import ReverseKLLoss, kd_loss, reverse_kl_loss


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), t=st.sampled_from([1.0, 2.0, 0.5]))
def test_matches_reference(b, t):
    zs, zt, _ = b
    got = reverse_kl_loss(zs, zt, temperature=t).item()
    assert got == pytest.approx(reverse_kl_ref(zs, zt, t), rel=1e-9, abs=1e-12)


def taid_repo_reverse_kl(logits, teacher_logits, mask):
    """SakanaAI/TAID commit a0628922, src/distil_losses/rkl.py ``reverse_kl`` (from DistiLLM), followed step
    by step: masked products of the student's probabilities with both log-probabilities, mean over the
    mask."""
    student_probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    student_logprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    teacher_logprobs = F.log_softmax(teacher_logits, dim=-1, dtype=torch.float32)
    inf_mask = torch.isinf(teacher_logits) | torch.isinf(logits)
    prod = torch.masked_fill(student_probs * teacher_logprobs, inf_mask, 0)
    prod = prod - torch.masked_fill(student_probs * student_logprobs, inf_mask, 0)
    x = prod.sum(dim=-1).view(-1)
    return -(x * mask.view(-1)).sum() / mask.view(-1).sum()


def test_parity_with_the_taid_repository():
    g = torch.Generator().manual_seed(0)
    zs = (torch.randn(6, 9, generator=g) * 3).requires_grad_(True)
    zt = torch.randn(6, 9, generator=g) * 3
    ours = reverse_kl_loss(zs, zt)
    (g_ours,) = torch.autograd.grad(ours, zs)
    theirs = taid_repo_reverse_kl(zs, zt, torch.ones(6))
    (g_theirs,) = torch.autograd.grad(theirs, zs)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-7)


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: reverse_kl_loss(a, zt, temperature=2.0), (zs,))
    reverse_kl_loss(zs, zt).backward()
    assert zt.grad is None


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), shift=st.integers(-50, 50))
def test_properties(b, shift):
    zs, zt, _ = b
    value = reverse_kl_loss(zs, zt).item()
    assert value >= -1e-12
    assert reverse_kl_loss(zs, zs).item() == pytest.approx(0.0, abs=1e-12)
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert reverse_kl_loss(zs + rows, zt - rows).item() == pytest.approx(value, rel=1e-9, abs=1e-9)
    # Swapping the roles gives the forward KL (both at temperature 1).
    assert reverse_kl_loss(zt, zs).item() == pytest.approx(
        kd_loss(zs, zt, temperature=1.0).item(), rel=1e-9, abs=1e-12
    )


@settings(max_examples=15, deadline=None)
@given(batches(bound=1e4, dtype=np.float32, soft=False))
def test_finite_for_extreme_logits(b):
    zs, zt, _ = b
    zs.requires_grad_(True)
    loss = reverse_kl_loss(zs, zt)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def test_module_and_half_inputs():
    zs, zt = torch.randn(4, 7), torch.randn(4, 7)
    m = ReverseKLLoss(temperature=2.0)
    assert m.requires == ("teacher_logits",)
    assert torch.equal(m(zs, zt, torch.zeros(4, dtype=torch.long)), reverse_kl_loss(zs, zt, temperature=2.0))
    out = reverse_kl_loss(zs.bfloat16(), zt.bfloat16())
    assert out.dtype == torch.float32


@pytest.mark.parametrize(
    "zs, zt, kw, match",
    [
        (torch.randn(4, 5), torch.randn(3, 5), {}, "shape mismatch"),
        (torch.randn(4, 5), torch.randn(4, 6), {}, "class count mismatch"),
        (torch.randn(4, 5), torch.randn(4, 5), {"temperature": 0.0}, "temperature must be"),
        (torch.randn(4), torch.randn(4), {}, "must have shape"),
    ],
)
def test_bad_inputs(zs, zt, kw, match):
    with pytest.raises(ValueError, match=match):
        reverse_kl_loss(zs, zt, **kw)
