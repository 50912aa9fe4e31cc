"""Naive float64 references of the feature losses, written from the papers' formulas with Python floats and
loops over samples (pairs, triplets), plus hypothesis strategies. Independent of ``unikd.losses``.

Reductions that the papers leave open (which pairs a mean runs over, where an eps sits) follow the reference
code the published numbers came from; each function says which.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def vecs(t: torch.Tensor) -> list[list[float]]:
    return t.detach().double().reshape(t.shape[0], -1).tolist()


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def norm(a: list[float]) -> float:
    return math.sqrt(dot(a, a))


def huber(x: float) -> float:
    """Smooth L1 with delta 1 (RKD's l_delta)."""
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# ---- RKD (Park et al. 2019, eqs. 3-7) ----------------------------------------------------------------------
def _rkd_potentials(x: list[list[float]]):
    n = len(x)
    dist = [
        [
            math.sqrt(max(sum((a - b) ** 2 for a, b in zip(x[i], x[j])), 1e-12)) if i != j else 0.0
            for j in range(n)
        ]
        for i in range(n)
    ]
    mu = sum(dist[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    psi_d = [[d / mu for d in row] for row in dist]

    def unit(i, j):
        v = [b - a for a, b in zip(x[i], x[j])]
        r = max(norm(v), 1e-12)  # F.normalize's eps, as the reference code
        return [c / r for c in v]

    units = [[unit(i, j) for j in range(n)] for i in range(n)]
    psi_a = [[[dot(units[i][j], units[i][k]) for k in range(n)] for j in range(n)] for i in range(n)]
    return psi_d, psi_a


def rkd_ref(s, t, distance_weight=25.0, angle_weight=50.0):
    """Means over all N^2 ordered pairs and N^3 triplets, degenerate ones included (mdistiller's
    ``F.smooth_l1_loss`` means); squared distances clamped at 1e-12 and difference vectors divided by
    ``max(norm, 1e-12)`` as there."""
    n = s.shape[0]
    ds, as_ = _rkd_potentials(vecs(s))
    dt, at = _rkd_potentials(vecs(t))
    l_d = sum(huber(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n)) / n**2
    l_a = sum(huber(as_[i][j][k] - at[i][j][k]) for i in range(n) for j in range(n) for k in range(n)) / n**3
    return distance_weight * l_d + angle_weight * l_a


# ---- PKT (Passalis & Tefas 2018, eqs. 7-10) ----------------------------------------------------------------
def _pkt_conditional(x: list[list[float]], eps: float) -> list[list[float]]:
    x = [[c / (norm(v) + eps) for c in v] for v in x]
    k = [[(dot(a, b) + 1.0) / 2.0 for b in x] for a in x]
    return [[v / sum(row) for v in row] for row in k]


def pkt_ref(s, t, eps=1e-7):
    """KL(p || q) of the cosine-kernel conditionals; the diagonal kept and the total divided by N^2 and eps in
    the norms and the log, as the authors' code (reused by RepDistiller / mdistiller)."""
    p = _pkt_conditional(vecs(t), eps)
    q = _pkt_conditional(vecs(s), eps)
    n = len(p)
    return (
        sum(p[i][j] * math.log((p[i][j] + eps) / (q[i][j] + eps)) for i in range(n) for j in range(n)) / n**2
    )


# ---- SP (Tung & Mori 2019, eqs. 2-4) -----------------------------------------------------------------------
def _sp_gram(x: list[list[float]]) -> list[list[float]]:
    g = [[dot(a, b) for b in x] for a in x]
    return [[v / max(norm(row), 1e-12) for v in row] for row in g]


def sp_ref(s, t):
    gs, gt = _sp_gram(vecs(s)), _sp_gram(vecs(t))
    n = len(gs)
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


# ---- CRD (Tian et al. 2020, eqs. 9-10 with the memory-bank NCE of the authors' code) -----------------------
def crd_ref(vs, vt, mem_s, mem_t, contrast_idx, z, temperature=0.07, eps=1e-7):
    """Per sample b: sum over the drawn rows of log h for the positive (column 0) and log(1 - h) for the
    negatives, h = P / (P + K/n + eps) with P = exp(<m, v>/T)/Z; both directions; mean over b."""
    vs, vt, ms, mt = vecs(vs), vecs(vt), vecs(mem_s), vecs(mem_t)
    idx = contrast_idx.tolist()
    n = len(ms)
    total = 0.0
    for b in range(len(vs)):
        k = len(idx[b]) - 1
        c = k / n
        for v, mem, zz in ((vs[b], mt, float(z[0])), (vt[b], ms, float(z[1]))):
            for col, row in enumerate(idx[b]):
                p = math.exp(dot(mem[row], v) / temperature) / zz
                total += math.log(p / (p + c + eps)) if col == 0 else math.log(c / (p + c + eps))
    return -total / len(vs)


# ---- ReviewKD HCL (Chen et al. 2021, eq. 7) ----------------------------------------------------------------
def _adaptive_pool(m: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling of a (C, H, W) array to (C, size, size), cell bounds floor/ceil."""
    c, h, w = m.shape
    out = np.zeros((c, size, size))
    for i in range(size):
        h0, h1 = (i * h) // size, -(-((i + 1) * h) // size)
        for j in range(size):
            w0, w1 = (j * w) // size, -(-((j + 1) * w) // size)
            out[:, i, j] = m[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


def hcl_ref(fs, ft):
    """Per level: MSE at full size (weight 1) and after pooling to 4, 2, 1 (weights 1/2, 1/4, 1/8; only sizes
    below H), divided by the weight sum; summed over levels. MSE = mean over samples and elements."""
    total = 0.0
    for s, t in zip(fs, ft):
        s, t = s.detach().double().numpy(), t.detach().double().numpy()
        n, _, h, _ = s.shape
        terms = [(1.0, np.mean([np.mean((s[i] - t[i]) ** 2) for i in range(n)]))]
        w = 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            w /= 2
            per = [np.mean((_adaptive_pool(s[i], size) - _adaptive_pool(t[i], size)) ** 2) for i in range(n)]
            terms.append((w, float(np.mean(per))))
        total += sum(a * b for a, b in terms) / sum(a for a, _ in terms)
    return total


# ---- ND (Wang et al. 2023, eq. 6) --------------------------------------------------------------------------
def nd_ref(s, t, means, y):
    """1 - <s, mu_y / ||mu_y||> / max(||s||, ||t||), mean over samples."""
    s, t, mu = vecs(s), vecs(t), vecs(means)
    out = []
    for si, ti, yi in zip(s, t, y.tolist()):
        e = [c / norm(mu[yi]) for c in mu[yi]]
        out.append(1.0 - dot(si, e) / max(norm(si), norm(ti)))
    return sum(out) / len(out)


# ---- hypothesis strategies ---------------------------------------------------------------------------------
def arrays(draw, shape, bound=5.0, dtype=np.float64):
    width = 32 if dtype == np.float32 else 64
    elems = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)
    return torch.from_numpy(draw(hnp.arrays(dtype, shape, elements=elems)))


@st.composite
def embedding_pairs(draw, *, min_n=2, max_n=5, max_d=6, bound=5.0):
    """``(student (N, D_s), teacher (N, D_t))`` float64 with distinct rows (distances bounded away from 0)."""
    n = draw(st.integers(min_n, max_n))
    ds, dt = draw(st.integers(1, max_d)), draw(st.integers(1, max_d))
    s, t = arrays(draw, (n, ds), bound), arrays(draw, (n, dt), bound)
    return s, t


def min_pair_distance(x: torch.Tensor) -> float:
    d = torch.cdist(x.double(), x.double())
    d.fill_diagonal_(float("inf"))
    return float(d.min())
