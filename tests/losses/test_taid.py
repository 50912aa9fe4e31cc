"""taid_loss / TAIDSchedule / TAIDLoss: per-sample reference, parity with SakanaAI/TAID (loss and the adaptive
update of t), gradcheck, properties, save/resume of the schedule."""

import math

import pytest
import torch
import torch.nn.functional as F
from _loss_refs import batches, taid_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import TAIDLoss, TAIDSchedule, kd_loss, taid_loss


@settings(max_examples=25, deadline=None)
@given(b=batches(soft=False), t=st.floats(0.0, 1.0), temp=st.sampled_from([1.0, 2.0]))
def test_matches_reference(b, t, temp):
    zs, zt, _ = b
    got = taid_loss(zs, zt, t=t, temperature=temp).item()
    assert got == pytest.approx(taid_ref(zs, zt, t, temp), rel=1e-8, abs=1e-10)


# ---- own reference following SakanaAI/TAID commit a0628922 ------------------------------------------------
def taid_repo_loss(logits, teacher_logits, mask, t):
    """src/distil_losses/taid.py ``TAID.compute_loss`` with fkl.py ``forward_kl(teacher_probs=p_t)``."""
    p_t = (1 - t) * logits.detach() + t * teacher_logits
    p_t = F.softmax(p_t, dim=-1, dtype=torch.float32)
    student_logprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    inf_mask = torch.isinf(logits)
    prod = torch.masked_fill(p_t * student_logprobs, inf_mask, 0)
    x = prod.sum(dim=-1).view(-1)
    return -(x * mask.view(-1)).sum() / mask.view(-1).sum()


class TaidRepoSchedule:
    """src/distil_losses/taid.py ``TAID.update_t``, on CPU float32 tensors (the original registers CUDA
    buffers), with ``progress = global_step / num_train_steps`` passed in."""

    def __init__(self, t_start=0.4, t_end=1.0, alpha=5e-4, beta=0.99, disable_adaptive=False):
        self.t_start, self.t_end, self.alpha, self.beta = t_start, t_end, alpha, beta
        self.disable_adaptive = disable_adaptive
        self.t = torch.tensor(t_start, dtype=torch.float32)
        self.prev_loss = torch.tensor(float("inf"), dtype=torch.float32)
        self.momentum = torch.zeros([], dtype=torch.float32)

    def update_t(self, loss, global_step, num_train_steps):
        if torch.isinf(self.prev_loss):
            self.prev_loss = loss
            return
        relative_change = (self.prev_loss - loss) / (self.prev_loss + 1e-15)
        self.momentum = self.beta * self.momentum + (1 - self.beta) * relative_change
        adaptive_delta = torch.sigmoid(self.momentum)
        progress = global_step / num_train_steps
        t_target = self.t_start + (self.t_end - self.t_start) * progress
        delta_t = self.alpha * adaptive_delta * (1 - self.t)
        t = min(self.t_end, max(t_target, self.t + delta_t)) if not self.disable_adaptive else t_target
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t, dtype=self.t.dtype)
        self.t = t
        self.prev_loss = loss


@pytest.mark.parametrize("t", [0.0, 0.4, 0.93])
def test_loss_parity_with_the_taid_repository(t):
    g = torch.Generator().manual_seed(0)
    zs = (torch.randn(7, 10, generator=g) * 3).requires_grad_(True)
    zt = torch.randn(7, 10, generator=g) * 3
    ours = taid_loss(zs, zt, t=t)
    (g_ours,) = torch.autograd.grad(ours, zs)
    theirs = taid_repo_loss(zs, zt, torch.ones(7), t)
    (g_theirs,) = torch.autograd.grad(theirs, zs)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("adaptive", [True, False])
def test_schedule_parity_with_the_taid_repository(adaptive):
    # Loss curves with plateaus, drops and rises, over a run of 400 steps with large alpha so t moves.
    g = torch.Generator().manual_seed(1)
    total = 400
    losses = 5.0 * torch.exp(-torch.arange(total) / 150.0) + 0.3 * torch.rand(total, generator=g)
    ours = TAIDSchedule(t_start=0.2, alpha=0.02, beta=0.9, adaptive=adaptive)
    theirs = TaidRepoSchedule(t_start=0.2, alpha=0.02, beta=0.9, disable_adaptive=not adaptive)
    for step in range(total):
        loss = losses[step].to(torch.float32)
        ours.update(loss, step / total)
        theirs.update_t(loss.clone(), step, total)
        assert ours.t.item() == theirs.t.item(), step
        assert ours.momentum.item() == pytest.approx(theirs.momentum.item(), abs=0.0)
    assert 0.2 < ours.t.item() <= 1.0


def test_schedule_state_resumes_exactly():
    losses = [3.0, 2.5, 2.7, 2.0, 1.9, 1.95, 1.5, 1.4, 1.41, 1.2]
    straight = TAIDSchedule(alpha=0.05)
    for i, v in enumerate(losses):
        straight.update(v, i / len(losses))
    first = TAIDSchedule(alpha=0.05)
    for i, v in enumerate(losses[:4]):
        first.update(v, i / len(losses))
    state = {k: v.clone() for k, v in first.state_dict().items()}
    assert set(state) == {"t", "prev_loss", "momentum"}
    resumed = TAIDSchedule(alpha=0.05)
    resumed.load_state_dict(state)
    for i, v in enumerate(losses[4:], start=4):
        resumed.update(v, i / len(losses))
    for key in ("t", "prev_loss", "momentum"):
        assert torch.equal(getattr(resumed, key), getattr(straight, key))


def test_first_update_only_records_and_t_is_monotone():
    s = TAIDSchedule(t_start=0.3)
    assert s.update(2.0, 0.0) == pytest.approx(0.3)
    assert s.prev_loss.item() == 2.0 and s.momentum.item() == 0.0
    previous = s.t.item()
    for i, v in enumerate([2.5, 3.0, 1.0, 4.0, 0.5]):  # rising losses never move t back
        s.update(v, (i + 1) / 100)
        assert s.t.item() >= previous
        previous = s.t.item()


def test_module_updates_in_training_only_and_saves_its_schedule():
    g = torch.Generator().manual_seed(2)
    zs, zt = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    m = TAIDLoss(alpha=0.1, t_start=0.2)
    assert "teacher_logits" in m.requires
    first = m(zs, zt, progress=0.0)
    assert first.item() == pytest.approx(taid_loss(zs, zt, t=0.2).item(), rel=1e-6)
    assert m.schedule.prev_loss.item() == pytest.approx(first.item())
    m(zs, zt, progress=0.5)
    t_after = m.schedule.t.item()
    assert t_after >= 0.6  # the linear ramp at progress 0.5: 0.2 + 0.8 * 0.5
    m.eval()
    m(zs, zt, progress=0.9)
    assert m.schedule.t.item() == t_after
    m.train()
    m(zs, zt)  # no progress: no update
    assert m.schedule.t.item() == t_after
    assert {"schedule.t", "schedule.prev_loss", "schedule.momentum"} <= set(m.state_dict())


def test_harness_progress_is_epoch_progress_over_total_epochs():
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    by_epochs = TAIDLoss(alpha=0.1, t_start=0.2, total_epochs=4)
    by_progress = TAIDLoss(alpha=0.1, t_start=0.2)
    for step in range(1, 5):
        by_epochs(zs, zt, epoch_progress=step * 0.5)  # 2 epochs of 4: progress 0.125 ... 0.5
        by_progress(zs, zt, progress=step * 0.125)
        assert by_epochs.schedule.t.item() == by_progress.schedule.t.item()
    assert by_epochs.schedule.t.item() >= 0.6
    unknown_length = TAIDLoss(alpha=0.1, t_start=0.2)
    unknown_length(zs, zt, epoch_progress=2.0)  # no total_epochs: no update
    assert unknown_length.schedule.t.item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="total_epochs"):
        TAIDLoss(total_epochs=0)


def test_gradcheck_and_limits():
    g = torch.Generator().manual_seed(4)
    zs = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zt = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    # The target is detached by design, so gradcheck runs at t=1 where it does not depend on the student.
    assert torch.autograd.gradcheck(lambda a: taid_loss(a, zt, t=1.0, temperature=2.0), (zs,))
    taid_loss(zs, zt).backward()
    assert zt.grad is None
    # t=1: cross-entropy to the teacher = KL + teacher entropy; t=0: the student's own entropy, no gradient.
    with torch.no_grad():
        lt = zt.log_softmax(1)
        entropy = -(lt.exp() * lt).sum(1).mean()
    assert taid_loss(zs, zt, t=1.0).item() == pytest.approx(
        kd_loss(zs, zt, temperature=1.0).item() + entropy.item()
    )
    zs.grad = None
    taid_loss(zs, zt, t=0.0).backward()
    assert zs.grad.abs().max().item() < 1e-15


def test_bad_inputs():
    zs, zt = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match="t must be a number in"):
        taid_loss(zs, zt, t=1.5)
    with pytest.raises(ValueError, match="t_start=0.9 must be smaller"):
        TAIDSchedule(t_start=0.9, t_end=0.5)
    with pytest.raises(ValueError, match="alpha must be a number"):
        TAIDSchedule(alpha=2.0)
    with pytest.raises(ValueError, match="progress must be"):
        TAIDSchedule().update(1.0, -0.1)
    with pytest.raises(ValueError, match="non-finite"):
        TAIDSchedule().update(math.nan, 0.1)
