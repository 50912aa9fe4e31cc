"""Parity of the token losses with the language-model code of the TAID authors and TRL's GKD, on (B, T, V)
logits with masked positions (own references that follow each computation step by step)."""

import pytest
import torch
import torch.nn.functional as F

import unikd.token as T

IGNORE = -100


def batch(seed=0, b=2, t=6, v=12):
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(b, t, v, generator=g) * 2).requires_grad_(True)
    zt = torch.randn(b, t, v, generator=g) * 2
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, :2] = IGNORE
    labels[1, -1] = IGNORE
    return zs, zt, labels


def taid_repo_dkd(logits, teacher_logits, target, mask, alpha, beta, temperature, pad_id=0):
    """SakanaAI/TAID commit a0628922, src/distil_losses/dkd.py ``DKD.forward`` + ``dkd_loss`` (logit_stand
    off): ignored labels replaced by the pad id, both terms masked and divided by ALL token positions."""
    target = torch.where(target == IGNORE, pad_id, target)
    zs = logits.reshape(-1, logits.size(-1))
    zt = teacher_logits.reshape(-1, logits.size(-1))
    target, mask = target.flatten(), mask.flatten()
    gt = torch.zeros_like(zs).scatter_(1, target.unsqueeze(1), 1).bool()
    other = torch.ones_like(zs).scatter_(1, target.unsqueeze(1), 0).bool()
    ps, pt = F.softmax(zs / temperature, dim=1), F.softmax(zt / temperature, dim=1)

    def cat_mask(p):
        return torch.cat([(p * gt).sum(1, keepdim=True), (p * other).sum(1, keepdim=True)], dim=1)

    ps, pt = cat_mask(ps), cat_mask(pt)
    tckd = F.kl_div(torch.log(ps), pt, reduction="none") * mask.unsqueeze(1)
    tckd = tckd.sum() * temperature**2 / target.shape[0]
    pt2 = F.softmax(zt / temperature - 1000.0 * gt, dim=1)
    ls2 = F.log_softmax(zs / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(ls2, pt2, reduction="none") * mask.unsqueeze(1)
    nckd = nckd.sum() * temperature**2 / target.shape[0]
    return alpha * tckd + beta * nckd


def trl_jsd(student_logits, teacher_logits, labels, beta):
    """huggingface/trl commit a9fa292c, ``GKDTrainer.generalized_jsd_loss`` with labels (batchmean)."""
    s, t = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
    if beta == 0:
        jsd = F.kl_div(s, t, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(t, s, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=s.dtype)
        m = torch.logsumexp(torch.stack([s + torch.log(1 - b), t + torch.log(b)]), dim=0)
        jsd = b * F.kl_div(m, t, reduction="none", log_target=True) + (1 - b) * F.kl_div(
            m, s, reduction="none", log_target=True
        )
    mask = labels != IGNORE
    return jsd[mask].sum() / mask.sum()


def taid_repo_taid(logits, teacher_logits, mask, t):
    """SakanaAI/TAID ``TAID.compute_loss`` (taid.py) with ``forward_kl`` (fkl.py)."""
    p_t = F.softmax((1 - t) * logits.detach() + t * teacher_logits, dim=-1, dtype=torch.float32)
    x = (p_t * F.log_softmax(logits, dim=-1, dtype=torch.float32)).sum(-1).view(-1)
    return -(x * mask.view(-1)).sum() / mask.view(-1).sum()


def grad(loss, x):
    return torch.autograd.grad(loss, x)[0]


@pytest.mark.parametrize("temperature, beta", [(1.0, 0.5), (2.0, 8.0)])
def test_dkd_equals_the_taid_repository_up_to_its_denominator(temperature, beta):
    zs, zt, labels = batch()
    mask = (labels != IGNORE).int()
    kept, total = int(mask.sum()), labels.numel()
    theirs = taid_repo_dkd(zs, zt, labels, mask, 1.0, beta, temperature)
    ours = T.dkd_loss(zs, zt, labels, beta=beta, temperature=temperature)
    assert (ours * kept / total).item() == pytest.approx(theirs.item(), rel=1e-5)
    assert torch.allclose(grad(ours * kept / total, zs), grad(theirs, zs), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 1.0])
def test_jsd_equals_trl(beta):
    zs, zt, labels = batch(1)
    theirs = trl_jsd(zs, zt, labels, beta)
    ours = T.jsd_loss(zs, zt, labels, beta=beta)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert torch.allclose(grad(ours, zs), grad(theirs, zs), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("t", [0.2, 0.7])
def test_taid_equals_the_taid_repository(t):
    zs, zt, labels = batch(2)
    theirs = taid_repo_taid(zs, zt, (labels != IGNORE).int(), t)
    ours = T.taid_loss(zs, zt, labels, t=t)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert torch.allclose(grad(ours, zs), grad(theirs, zs), rtol=1e-4, atol=1e-7)
