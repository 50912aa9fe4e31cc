"""Naive per-sample float64 references of the newer logit losses, written from the papers' formulas with
Python floats (loops, no torch ops), independent of ``unikd.losses``."""

from __future__ import annotations

import math

import torch
from _loss_refs import log_softmax, rows, softmax


def zscore(v: list[float], eps: float = 1e-7) -> list[float]:
    """Logit standardization of one row: (v - mean) / (eps + unbiased std)."""
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return [(x - m) / (eps + sd) for x in v]


def zscore_tensor(z: torch.Tensor) -> torch.Tensor:
    return torch.tensor([zscore(r) for r in rows(z)], dtype=torch.float64)


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    da, db = [x - ma for x in a], [x - mb for x in b]
    num = sum(x * y for x, y in zip(da, db))
    den = math.sqrt(sum(x * x for x in da)) * math.sqrt(sum(y * y for y in db))
    return num / (den + 1e-8)


def dist_ref(zs, zt, beta=1.0, gamma=1.0, temperature=1.0):
    ys = [softmax([x / temperature for x in r]) for r in rows(zs)]
    yt = [softmax([x / temperature for x in r]) for r in rows(zt)]
    n, c = len(ys), len(ys[0])
    inter = 1 - sum(_pearson(ys[i], yt[i]) for i in range(n)) / n
    cols_s = [[ys[i][j] for i in range(n)] for j in range(c)]
    cols_t = [[yt[i][j] for i in range(n)] for j in range(c)]
    intra = 1 - sum(_pearson(cols_s[j], cols_t[j]) for j in range(c)) / c
    return temperature**2 * (beta * inter + gamma * intra)


def _ttm_terms(s: list[float], t: list[float], power: float) -> tuple[float, float]:
    """(sum_c p_t^l, KL(p_t^l / sum || softmax(s))) of one sample."""
    pt = softmax(t)
    powered = [p**power for p in pt]
    norm = sum(powered)
    q = [p / norm for p in powered]
    ls = log_softmax(s)
    return norm, sum(qi * (math.log(qi) - li) for qi, li in zip(q, ls) if qi > 0)


def ttm_ref(zs, zt, power=1.0):
    out = [_ttm_terms(s, t, power)[1] for s, t in zip(rows(zs), rows(zt))]
    return sum(out) / len(out)


def wttm_ref(zs, zt, power=1.0):
    out = [w * kl for w, kl in (_ttm_terms(s, t, power) for s, t in zip(rows(zs), rows(zt)))]
    return sum(out) / len(out)


def abkd_ref(zs, zt, alpha=0.5, beta=0.5, temperature=4.0):
    """The alpha-beta divergence D(p_teacher || q_student) per sample, general case (alpha, beta, alpha + beta
    non-zero), plus the boundary forms of the authors' code."""
    a, b = alpha, beta
    out = []
    for s, t in zip(rows(zs), rows(zt)):
        q = softmax([x / temperature for x in s])
        p = softmax([x / temperature for x in t])
        if a == 0 and b == 0:
            d = 0.5 * sum((math.log(qi) - math.log(pi)) ** 2 for pi, qi in zip(p, q))
        elif a == 0:
            d = sum(qi**b * math.log(qi / pi) - (qi**b - pi**b) / b for pi, qi in zip(p, q))
        elif b == 0:
            d = sum(pi**a * math.log(pi / qi) - (pi**a - qi**a) / a for pi, qi in zip(p, q))
        elif a + b == 0:
            d = sum(math.log(qi / pi) + ((pi / qi) ** a - 1) / a for pi, qi in zip(p, q))
        else:
            d = -sum(pi**a * qi**b - a / (a + b) * pi ** (a + b) - b / (a + b) * qi ** (a + b)
                     for pi, qi in zip(p, q)) / (a * b)
        out.append(d)
    return sum(out) / len(out)


def ctkd_lambda_ref(epoch: int, lambda_max=1.0, lambda_min=0.0, decay_epochs=10):
    """The cosine curriculum as a positive reversal strength rising from lambda_min to lambda_max over E
    epochs, lambda_min + 1/2 (lambda_max - lambda_min) (1 + cos((1 + min(e, E)/E) pi)), at the 1-based
    epoch e."""
    e = min(epoch, decay_epochs)
    return lambda_min + 0.5 * (lambda_max - lambda_min) * (1 + math.cos((1 + e / decay_epochs) * math.pi))


def kd_at_ref(zs, zt, tau: float) -> float:
    out = []
    for s, t in zip(rows(zs), rows(zt)):
        ls = log_softmax([x / tau for x in s])
        lt = log_softmax([x / tau for x in t])
        out.append(sum(math.exp(b) * (b - a) for a, b in zip(ls, lt)) * tau**2)
    return sum(out) / len(out)
