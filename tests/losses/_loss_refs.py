"""Naive per-sample references of the losses, written from the formulas with Python floats, plus shared
hypothesis strategies. Deliberately loop-based and independent of ``unikd.losses._common``."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


# ---- scalar helpers --------------------------------------------------------------------------------------
def log_softmax(v: list[float]) -> list[float]:
    m = max(v)
    lse = m + math.log(sum(math.exp(x - m) for x in v))
    return [x - lse for x in v]


def softmax(v: list[float]) -> list[float]:
    return [math.exp(x) for x in log_softmax(v)]


def f32(x: float) -> float:
    """Round to float32 (the implementation ranks on float32-rounded scores)."""
    return float(np.float32(x))


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.detach().double().tolist()


def label_rows(target: torch.Tensor, c: int) -> list[list[float]]:
    """Every target as a full label vector (one-hot for class indices)."""
    if target.is_floating_point():
        return target.double().tolist()
    return [[1.0 if i == t else 0.0 for i in range(c)] for t in target.tolist()]


def argmax(v: list[float]) -> int:
    return max(range(len(v)), key=lambda i: (v[i], -i))


# ---- references -------------------------------------------------------------------------------------------
def kd_ref(zs, zt, temperature=4.0):
    out = []
    for s, t in zip(rows(zs), rows(zt)):
        ls = log_softmax([x / temperature for x in s])
        lt = log_softmax([x / temperature for x in t])
        out.append(sum(math.exp(b) * (b - a) for a, b in zip(ls, lt)) * temperature**2)
    return sum(out) / len(out)


def dkd_ref(zs, zt, target, alpha=1.0, beta=8.0, temperature=4.0):
    c = zs.shape[1]
    out = []
    for s, t, lab in zip(rows(zs), rows(zt), label_rows(target, c)):
        y = argmax(lab)
        ps, pt = softmax([x / temperature for x in s]), softmax([x / temperature for x in t])
        bs = [ps[y], sum(p for i, p in enumerate(ps) if i != y)]
        bt = [pt[y], sum(p for i, p in enumerate(pt) if i != y)]
        tckd = sum(b * (math.log(b) - math.log(a)) for a, b in zip(bs, bt) if b > 0)
        ns = log_softmax([x / temperature for i, x in enumerate(s) if i != y])
        nt = log_softmax([x / temperature for i, x in enumerate(t) if i != y])
        nckd = sum(math.exp(b) * (b - a) for a, b in zip(ns, nt))
        out.append((alpha * tckd + beta * nckd) * temperature**2)
    return sum(out) / len(out)


def nkd_ref(zs, zt, target, temperature=1.0, gamma=1.5):
    c = zs.shape[1]
    out = []
    for s, t, lab in zip(rows(zs), rows(zt), label_rows(target, c)):
        y = argmax(lab)
        term_t = -softmax(t)[y] * log_softmax(s)[y]
        q = softmax([x / temperature for i, x in enumerate(t) if i != y])
        ls = log_softmax([x / temperature for i, x in enumerate(s) if i != y])
        out.append(term_t - gamma * temperature**2 * sum(a * b for a, b in zip(q, ls)))
    return sum(out) / len(out)


def uskd_targets(lab: list[float], soft: bool) -> list[tuple[int, float]]:
    """(class, value) target columns: the index, or the top two soft-label entries with value > 0."""
    if not soft:
        return [(argmax(lab), 1.0)]
    order = sorted(range(len(lab)), key=lambda i: -lab[i])[:2]
    return [(i, lab[i]) for i in order if lab[i] > 0]


def uskd_ref(zs, zw, target, alpha=1.0, beta=0.1, mu=0.005, rank="paper"):
    n, c = zs.shape
    labs = label_rows(target, c)
    soft = target.is_floating_point()
    tgts = [uskd_targets(lab, soft) for lab in labs]
    s_rows, w_rows = rows(zs), rows(zw)
    # Batch means of S_t^2 per label column (first/second target), over the rows that have that column.
    sq: list[list[float]] = [[], []]
    for s, tg in zip(s_rows, tgts):
        p = softmax(s)
        for k, (i, _) in enumerate(tg):
            sq[k].append(p[i] ** 2)
    means = [sum(v) / len(v) if v else 0.0 for v in sq]
    total = 0.0
    for s, w, lab, tg in zip(s_rows, w_rows, labs, tgts):
        ps, pw, ls, lw = softmax(s), softmax(w), log_softmax(s), log_softmax(w)
        l_target = -sum((ps[i] ** 2 + v - means[k]) * ls[i] for k, (i, v) in enumerate(tg))
        l_weak = -mu * sum((0.9 * lab[i] + 0.1 / c) * lw[i] for i in range(c))
        tset = {i for i, _ in tg}
        wt, st_ = sum(pw[i] for i in tset), sum(ps[i] for i in tset)
        if rank == "paper":
            score = [pw[i] / (1 - wt) + ps[i] / (1 - st_) for i in range(c)]
        elif rank == "student":
            score = [ps[i] / (1 - st_) for i in range(c)]
        else:
            lst = sum(ls[i] for i in tset)
            score = [pw[i] / (1 - wt + 1e-6) + ls[i] / (1 - lst + 1e-6) for i in range(c)]
        order = sorted(range(c), key=lambda i: (-f32(score[i]), i))
        zipf = {cls: 1.0 / (pos + 1) for pos, cls in enumerate(order)}
        non = [i for i in range(c) if i not in tset]
        l_non = 0.0
        if non:
            norm = sum(zipf[i] for i in non)
            lns = log_softmax([s[i] for i in non])
            l_non = -sum(zipf[i] / norm * lv for i, lv in zip(non, lns))
        total += alpha * l_target + beta * l_non + l_weak
    return total / n


def uskd_scores_separated(zs, zw, target, rank="paper", gap=1e-5) -> bool:
    """True when no two rank scores of a row are within ``gap`` (relative) of each other."""
    c = zs.shape[1]
    soft = target.is_floating_point()
    for s, w, lab in zip(rows(zs), rows(zw), label_rows(target, c)):
        tset = {i for i, _ in uskd_targets(lab, soft)}
        ps, pw, ls = softmax(s), softmax(w), log_softmax(s)
        wt, st_ = sum(pw[i] for i in tset), sum(ps[i] for i in tset)
        if rank == "paper":
            if wt >= 1 - 1e-9 or st_ >= 1 - 1e-9:
                return False
            score = sorted(pw[i] / (1 - wt) + ps[i] / (1 - st_) for i in range(c))
        elif rank == "student":
            if st_ >= 1 - 1e-9:
                return False
            score = sorted(ps[i] / (1 - st_) for i in range(c))
        else:
            lst = sum(ls[i] for i in tset)
            score = sorted(pw[i] / (1 - wt + 1e-6) + ls[i] / (1 - lst + 1e-6) for i in range(c))
        if any(b - a <= gap * max(1.0, abs(a), abs(b)) for a, b in zip(score, score[1:])):
            return False
    return True


def tfkd_ref(zs, target, correct_prob=0.99, temperature=20.0):
    c = zs.shape[1]
    off = (1 - correct_prob) / (c - 1)
    out = []
    for s, lab in zip(rows(zs), label_rows(target, c)):
        pd = [correct_prob * v + off * (1 - v) for v in lab]
        lq, ls = log_softmax([x / temperature for x in pd]), log_softmax(s)
        out.append(sum(math.exp(b) * (b - a) for a, b in zip(ls, lq)))
    return sum(out) / len(out)


def zipf_ls_ref(zs, target, power=1.0, only_correct=False):
    c = zs.shape[1]
    per, keep = [], []
    for s, lab in zip(rows(zs), label_rows(target, c)):
        y = argmax(lab)
        s32 = [f32(x) for x in s]
        rank = [1 + sum(1 for j in range(c) if s32[j] > s32[i]) for i in range(c)]
        non = [i for i in range(c) if i != y]
        w = [rank[i] ** -power for i in non]
        z = [x / sum(w) for x in w]
        lns = log_softmax([s[i] for i in non])
        per.append(sum(a * (math.log(a) - b) for a, b in zip(z, lns)))
        keep.append(argmax(s) == y)
    if not only_correct:
        return sum(per) / len(per)
    return sum(p for p, k in zip(per, keep) if k) / max(1, sum(keep))


def reverse_kl_ref(zs, zt, temperature=1.0):
    out = []
    for s, t in zip(rows(zs), rows(zt)):
        ls = log_softmax([x / temperature for x in s])
        lt = log_softmax([x / temperature for x in t])
        out.append(sum(math.exp(a) * (a - b) for a, b in zip(ls, lt)) * temperature**2)
    return sum(out) / len(out)


def jsd_ref(zs, zt, beta=0.5, temperature=1.0):
    """GKD's generalized JSD with TRL's end points (beta=0: KL(T||S), beta=1: KL(S||T))."""

    def kl(p, q):
        return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)

    out = []
    for s, t in zip(rows(zs), rows(zt)):
        ps = softmax([x / temperature for x in s])
        pt = softmax([x / temperature for x in t])
        if beta == 0:
            out.append(kl(pt, ps))
        elif beta == 1:
            out.append(kl(ps, pt))
        else:
            m = [beta * b + (1 - beta) * a for a, b in zip(ps, pt)]
            out.append(beta * kl(pt, m) + (1 - beta) * kl(ps, m))
    return sum(out) / len(out)


def taid_ref(zs, zt, t=0.4, temperature=1.0):
    """-T^2 sum_i p_i log S_i with p = softmax(((1-t) z_s + t z_t) / T)."""
    out = []
    for s, u in zip(rows(zs), rows(zt)):
        p = softmax([((1 - t) * a + t * b) / temperature for a, b in zip(s, u)])
        ls = log_softmax([a / temperature for a in s])
        out.append(-sum(a * b for a, b in zip(p, ls)) * temperature**2)
    return sum(out) / len(out)


# ---- hypothesis strategies --------------------------------------------------------------------------------
@st.composite
def batches(draw, *, max_n=4, max_c=6, bound=20.0, count=2, dtype=np.float64, soft=None):
    """``(logits..., target)``: ``count`` logit tensors (N, C) and int64 indices or (N, C) mixup labels."""
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(2, max_c))
    width = 32 if dtype == np.float32 else 64
    elems = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)
    logits = [torch.from_numpy(draw(hnp.arrays(dtype, (n, c), elements=elems))) for _ in range(count)]
    y = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=torch.int64)
    use_soft = draw(st.booleans()) if soft is None else soft
    if use_soft:
        y2 = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=torch.int64)
        lam = draw(st.floats(0.05, 0.95).filter(lambda v: abs(v - 0.5) > 0.02))
        y = mixup(y, y2, lam, c, torch.float64 if dtype == np.float64 else torch.float32)
    return (*logits, y)


def mixup(y1: torch.Tensor, y2: torch.Tensor, lam: float, c: int, dtype=torch.float64) -> torch.Tensor:
    """Soft labels ``lam * onehot(y1) + (1 - lam) * onehot(y2)``."""
    eye = torch.eye(c, dtype=dtype)
    return lam * eye[y1] + (1 - lam) * eye[y2]


def assume_close_rows_ok(x: torch.Tensor) -> None:
    """Skip examples whose student logits contain float32 near-ties (ranks would be ambiguous)."""
    for r in rows(x):
        v = sorted(f32(a) for a in r)
        assume(all(b == a or b - a > 1e-4 for a, b in zip(v, v[1:])))


def nkd_nontarget_parts_ref(zs, zt, target, temperature=1.0, gamma=1.5):
    """Batch means of NKD's target term, gamma lambda^2 H(N(T^lambda)) and gamma lambda^2 KL(N(T) || N(S))."""
    c = zs.shape[1]
    w = gamma * temperature**2
    parts = [0.0, 0.0, 0.0]
    for s, t, lab in zip(rows(zs), rows(zt), label_rows(target, c)):
        y = argmax(lab)
        lq = log_softmax([x / temperature for i, x in enumerate(t) if i != y])
        ls = log_softmax([x / temperature for i, x in enumerate(s) if i != y])
        parts[0] += -softmax(t)[y] * log_softmax(s)[y]
        parts[1] += -w * sum(math.exp(a) * a for a in lq)
        parts[2] += w * sum(math.exp(a) * (a - b) for a, b in zip(lq, ls))
    return [p / zs.shape[0] for p in parts]


def uskd_nontarget_kl_ref(zs, zw, target, beta=0.1, rank="paper"):
    """beta * batch mean of KL(Z || N(S)) with the Zipf labels Z of uskd_ref."""
    c = zs.shape[1]
    soft = target.is_floating_point()
    total = 0.0
    for s, w, lab in zip(rows(zs), rows(zw), label_rows(target, c)):
        tset = {i for i, _ in uskd_targets(lab, soft)}
        ps, pw, ls = softmax(s), softmax(w), log_softmax(s)
        wt, st_ = sum(pw[i] for i in tset), sum(ps[i] for i in tset)
        if rank == "paper":
            score = [pw[i] / (1 - wt) + ps[i] / (1 - st_) for i in range(c)]
        elif rank == "student":
            score = [ps[i] / (1 - st_) for i in range(c)]
        else:
            lst = sum(ls[i] for i in tset)
            score = [pw[i] / (1 - wt + 1e-6) + ls[i] / (1 - lst + 1e-6) for i in range(c)]
        order = sorted(range(c), key=lambda i: (-f32(score[i]), i))
        zipf = {cls: 1.0 / (pos + 1) for pos, cls in enumerate(order)}
        non = [i for i in range(c) if i not in tset]
        if non:
            norm = sum(zipf[i] for i in non)
            lns = log_softmax([s[i] for i in non])
            total += sum(zipf[i] / norm * (math.log(zipf[i] / norm) - lv) for i, lv in zip(non, lns))
    return beta * total / zs.shape[0]
