"""Small references that follow the authors' code op by op (same reductions, eps placement, T^2 factors,
masks, unbiased std), written for the parity tests. Each cites the repository, commit and path it follows.
They use plain torch ops so that autograd gives the authors' gradients too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---- logit standardization ---------------------------------------------------------------------------------
# sunshangquan/logit-standardization-KD @ f6e5aa5172bad618e801163c3385322eea673754,
# mdistiller/distillers/KD.py and DKD.py (``normalize``, ``kd_loss``, ``dkd_loss`` with logit_stand=True).


def ls_normalize(z: torch.Tensor) -> torch.Tensor:
    """(z - mean) / (1e-7 + std) over the last dim; ``Tensor.std`` is unbiased by default."""
    return (z - z.mean(dim=-1, keepdim=True)) / (1e-7 + z.std(dim=-1, keepdim=True))


def ls_kd(zs: torch.Tensor, zt: torch.Tensor, temperature: float) -> torch.Tensor:
    s, t = ls_normalize(zs), ls_normalize(zt)
    log_ps = F.log_softmax(s / temperature, dim=1)
    pt = F.softmax(t / temperature, dim=1)
    return F.kl_div(log_ps, pt, reduction="none").sum(1).mean() * temperature**2


def ls_dkd(zs, zt, target, alpha, beta, temperature):
    s, t = ls_normalize(zs), ls_normalize(zt)
    gt = torch.zeros_like(s).scatter_(1, target.view(-1, 1), 1).bool()
    other = torch.ones_like(s).scatter_(1, target.view(-1, 1), 0).bool()

    def binary(p):  # [p_t, 1 - p_t] as the masked sums of the code's ``cat_mask``
        return torch.cat([(p * gt).sum(1, keepdim=True), (p * other).sum(1, keepdim=True)], dim=1)

    ps, pt = binary(F.softmax(s / temperature, dim=1)), binary(F.softmax(t / temperature, dim=1))
    n = target.shape[0]
    tckd = F.kl_div(torch.log(ps), pt, reduction="sum") * temperature**2 / n
    pt2 = F.softmax(t / temperature - 1000.0 * gt, dim=1)
    log_ps2 = F.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_ps2, pt2, reduction="sum") * temperature**2 / n
    return alpha * tckd + beta * nckd


# ---- NKD
# yzd-v/cls_KD @ 1e5d48f36957ee460d39d7ebc592c6cc7f8f3d66 (branch 1.0), mmcls/models/dis_losses/nkd.py;
# applied to ls_normalize'd logits for NKD + logit standardization (a combination neither code runs).


def cls_kd_nkd(zs, zt, target, temp, gamma):
    n = zs.shape[0]
    label = target.view(n, 1)
    s_t = F.log_softmax(zs, dim=1).gather(1, label)
    t_t = F.softmax(zt, dim=1).gather(1, label).detach()
    loss_t = -(t_t * s_t).mean()
    keep = torch.ones_like(zs).scatter_(1, label, 0).bool()
    s_non = F.log_softmax(zs[keep].reshape(n, -1) / temp, dim=1)
    t_non = F.softmax(zt[keep].reshape(n, -1) / temp, dim=1)
    return loss_t - gamma * temp**2 * (t_non * s_non).sum(dim=1).mean()


# ---- DIST
# hunto/image_classification_sota @ d9662f7df68fe46b973c4580b7c9b896cedcd301 (the ``classification``
# submodule pinned by hunto/DIST_KD @ 2418f18b1fedd7c2646a7b1b9a27d5c674c2170b), lib/models/losses/dist_kd.py.


def _cos(a, b, eps=1e-8):
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _pearson(a, b, eps=1e-8):
    return _cos(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps)


def official_dist(zs, zt, beta, gamma, tau):
    ys, yt = (zs / tau).softmax(dim=1), (zt / tau).softmax(dim=1)
    inter = tau**2 * (1 - _pearson(ys, yt).mean())
    intra = tau**2 * (1 - _pearson(ys.transpose(0, 1), yt.transpose(0, 1)).mean())
    return beta * inter + gamma * intra


# ---- TTM / WTTM
# zkxufo/TTM @ fe457b33a71ba27536ec04fe3d32c5b04963522f, distiller_zoo/ttm.py and distiller_zoo/wttm.py.


def _ttm_parts(zs, zt, power):
    log_ps = F.log_softmax(zs, dim=1)
    pt = torch.pow(torch.softmax(zt, dim=1), power)
    norm = torch.sum(pt, dim=1)
    pt = pt / norm.unsqueeze(1)
    return norm, torch.sum(F.kl_div(log_ps, pt, reduction="none"), dim=1)


def official_ttm(zs, zt, power):
    return torch.mean(_ttm_parts(zs, zt, power)[1])


def official_wttm(zs, zt, power):
    norm, kl = _ttm_parts(zs, zt, power)
    return torch.mean(norm * kl)


# ---- ABKD
# ghwang-s/abkd @ df813185e69d21d1e99510272cd94e49be7250c0, standard_classification/distiller_zoo/abkl.py
# (the divergence; the two entropies it also returns are only logged).


def official_abkd(zs, zt, alpha, beta, temperature):
    p = F.softmax(zt / temperature, dim=1)
    q = F.softmax(zs / temperature, dim=1)
    inf = torch.isinf(zs) | torch.isinf(zt)
    a, b = alpha, beta
    if a == 0 and b == 0:
        diff = torch.masked_fill(torch.log(q) - torch.log(p), inf, 0)
        div = 0.5 * torch.sum(diff**2, dim=1)
    elif a == 0:
        qb = torch.masked_fill(torch.pow(q, b), inf, 0)
        pb = torch.masked_fill(torch.pow(p, b), inf, 0)
        ratio = qb / pb
        ratio = torch.masked_fill(ratio, torch.isnan(ratio), 0)
        div = (1 / b) * torch.sum(qb * torch.log(ratio) - qb + pb, dim=1)
    elif b == 0:
        pa = torch.masked_fill(torch.pow(p, a), inf, 0)
        qa = torch.masked_fill(torch.pow(q, a), inf, 0)
        div = (1 / a) * torch.sum(pa * torch.log(pa / qa) - pa + qa, dim=1)
    elif a + b == 0:
        pa = torch.masked_fill(torch.pow(p, a), inf, 0)
        qa = torch.masked_fill(torch.pow(q, a), inf, 0)
        div = torch.sum((1 / a) * (torch.log(qa / pa) + (qa / pa).reciprocal() - 1), dim=1)
    else:
        first = torch.masked_fill(torch.pow(p, a) * torch.pow(q, b), inf, 0)
        second = torch.masked_fill((a / (a + b)) * torch.pow(p, a + b), inf, 0)
        third = torch.masked_fill((b / (a + b)) * torch.pow(q, a + b), inf, 0)
        div = -torch.sum(first - second - third, dim=1) / (a * b)
    return div.mean()


# ---- CTKD
# zhengli97/CTKD @ 7d5252241259ae70d38a832371fed9697d15fc14: models/temp_global.py (Global_T, the
# gradient-reversal function multiplying the gradient by the passed value), train_student.py (CosineDecay,
# called with the 1-based epoch; run_cifar_distill.sh: --decay_max 0 --decay_min -1 --decay_loops 10,
# --t_start 1 --t_end 20, -r 0.1 -a 0.9), helper/loops.py (temp = t_start + t_end * sigmoid(...)),
# distiller_zoo/KD.py (DistillKL: KLDivLoss(batchmean)(log_softmax(y_s/T), softmax(y_t/T)) * T * T).


def official_cosine_decay(epoch: int, max_value=0.0, min_value=-1.0, num_loops=10) -> float:
    i = min(max(epoch, 0), num_loops)
    return (math.cos(i * math.pi / num_loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


class _OfficialGRL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, value):
        ctx.value = value
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.new_tensor(ctx.value) * grad, None


def official_ctkd(zs, zt, global_t, epoch: int, t_start=1.0, t_end=20.0, decay_min=-1.0, loops=10,
                  logit_stand=False):
    """(KD term, temperature) of one step in epoch ``epoch`` (1-based). With ``logit_stand`` the
    logit-standardization authors' DistillKL_logit_stand (their CTKD/distiller_zoo/KD.py)."""
    value = official_cosine_decay(epoch, 0.0, decay_min, loops)
    temp = t_start + t_end * torch.sigmoid(_OfficialGRL.apply(global_t, value))
    if logit_stand:
        zs, zt = ls_normalize(zs), ls_normalize(zt)
    kl = torch.nn.KLDivLoss(reduction="batchmean")
    kd = kl(F.log_softmax(zs / temp, dim=1), F.softmax(zt / temp, dim=1))
    return kd * temp * temp, temp
