"""Per-sample float64 references of the online-distillation losses (DML, BD-KD), written from the formulas
with Python floats, plus own re-implementations of the computations in the public DML code (for parity tests).

Deliberately loop-based and independent of ``unikd.losses``.
"""

from __future__ import annotations

import math

import torch
from _loss_refs import log_softmax, rows


def _kl(log_p: list[float], log_q: list[float]) -> float:
    """KL(p || q) from log-probabilities."""
    return sum(math.exp(a) * (a - b) for a, b in zip(log_p, log_q))


def _entropy(log_p: list[float]) -> float:
    return -sum(math.exp(a) * a for a in log_p)


def dml_ref(zs, zp, temperature=1.0):
    """mean_i KL(p_peer^i || p_self^i) * T^2, p = softmax(z / T)."""
    out = []
    for s, p in zip(rows(zs), rows(zp)):
        ls = log_softmax([x / temperature for x in s])
        lp = log_softmax([x / temperature for x in p])
        out.append(_kl(lp, ls) * temperature**2)
    return sum(out) / len(out)


def bdkd_weight_ref(s: list[float], t: list[float], temperature: float, gap_scale: float) -> float:
    ls = log_softmax([x / temperature for x in s])
    lt = log_softmax([x / temperature for x in t])
    gap = _entropy(ls) - _entropy(lt)
    return 1.0 / (1.0 + math.exp(-gap_scale * gap))


def bdkd_ref(zs, zt, temperature=1.0, gap_scale=1.0):
    """mean_i [(1 - w_i) KL(p_t || p_s) + w_i KL(p_s || p_t)] * T^2, w_i = sigmoid(gap_scale (H_s - H_t))."""
    out = []
    for s, t in zip(rows(zs), rows(zt)):
        ls = log_softmax([x / temperature for x in s])
        lt = log_softmax([x / temperature for x in t])
        w = bdkd_weight_ref(s, t, temperature, gap_scale)
        out.append(((1 - w) * _kl(lt, ls) + w * _kl(ls, lt)) * temperature**2)
    return sum(out) / len(out)


def bdkd_peer_ref(zp, zs, temperature=1.0):
    """mean_i KL(p_s^i || p_peer^i) * T^2."""
    out = []
    for p, s in zip(rows(zp), rows(zs)):
        lp = log_softmax([x / temperature for x in p])
        ls = log_softmax([x / temperature for x in s])
        out.append(_kl(ls, lp) * temperature**2)
    return sum(out) / len(out)


# ---- parity references: own re-implementations of the public DML code ------------------------------------
def dml_official_tf(logits1: torch.Tensor, logits2: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The loss of network 1 in github.com/YingZhangDUT/Deep-Mutual-Learning (commit c3d6ff1e,
    ``train_models.py``, ``kl_loss_compute(logits1, logits2)``): softmaxes of both, then
    ``reduce_mean_n(reduce_sum_c(pred2 * log(1e-8 + pred2 / (pred1 + 1e-8))))``; the gradient flows into
    network 1 only (its optimizer's var_list), so ``logits2`` is a constant here. ``eps`` is the official
    1e-8 guard; ``eps=0`` removes it."""
    pred1 = torch.softmax(logits1, dim=1)
    pred2 = torch.softmax(logits2.detach(), dim=1)
    return (pred2 * torch.log(eps + pred2 / (pred1 + eps))).sum(dim=1).mean()


def dml_chxy95(outputs: list[torch.Tensor], i: int) -> torch.Tensor:
    """The mimicry part of network ``i``'s loss in github.com/chxy95/Deep-Mutual-Learning (commit 88371a3c,
    ``trainer.py``, ``train_one_epoch``): ``sum_{j != i} KLDivLoss(batchmean)(log_softmax(out_i),
    softmax(out_j)) / (K - 1)`` with the other outputs treated as targets."""
    kl = torch.nn.KLDivLoss(reduction="batchmean")
    total = 0.0
    for j, out in enumerate(outputs):
        if j != i:
            total = total + kl(torch.log_softmax(outputs[i], dim=1), torch.softmax(out.detach(), dim=1))
    return total / (len(outputs) - 1)
