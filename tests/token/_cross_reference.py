"""Naive float64 references of the cross-tokenizer losses, one position at a time."""

import math


def uld_authors_reference(zs, zt, s_labels, t_labels, ignore=-100, ts=1.0, tt=1.0):
    """ULD as computed by Nicolas-BZRD/llm-recipes (models/distillation_model.py, DistillationLoss), from
    next-token labels: each answer starts at its first kept label and has as many positions as kept labels;
    the first min(sizes) positions are compared; mean per sequence, then over the batch."""
    out = []
    for b in range(zs.shape[0]):
        ks = [i for i in range(zs.shape[1]) if int(s_labels[b, i]) != ignore]
        kt = [j for j in range(zt.shape[1]) if int(t_labels[b, j]) != ignore]
        s0, t0, n = ks[0], kt[0], min(len(ks), len(kt))
        total = 0.0
        for k in range(n):
            total += uld_pair(zs[b, s0 + k].tolist(), zt[b, t0 + k].tolist(), ts, tt)
        out.append(total / n)
    return sum(out) / len(out)


def _softmax(z, t):
    m = max(z)
    e = [math.exp((x - m) / t) for x in z]
    s = sum(e)
    return [x / s for x in e]


def uld_pair(zs, zt, ts=1.0, tt=1.0):
    p = sorted(_softmax(zs, ts), reverse=True)
    q = sorted(_softmax(zt, tt), reverse=True)
    width = max(len(p), len(q))
    p += [0.0] * (width - len(p))
    q += [0.0] * (width - len(q))
    return sum(abs(a - b) for a, b in zip(p, q, strict=True))


def span_kl_pair(zs, zt, student_ids, teacher_ids, t=1.0):
    p_t = _softmax([zt[j] for j in teacher_ids], t)
    p_s = _softmax([zs[i] for i in student_ids], t)
    return t * t * sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s, strict=True) if a > 0)


def common_ends(s_offsets, t_offsets):
    """Brute force: (i, j) with equal, non-empty token ends; the last position of each end."""
    pairs = {}
    for i, (a, e) in enumerate(s_offsets):
        for j, (c, f) in enumerate(t_offsets):
            if e > a and f > c and e == f:
                pairs[e] = (i, j)
    return [pairs[e] for e in sorted(pairs)]
