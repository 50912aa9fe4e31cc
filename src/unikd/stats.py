"""Paired statistics for multi-seed comparisons: Student-t quantiles, paired differences with a 95%
confidence interval, and the smallest difference a grid could detect.

Why paired: every method of a grid runs with the same seeds, and a seed fixes the data order, the
augmentation and the initialisation. The per-seed difference ``A(seed) - B(seed)`` cancels what the seed
does to both runs, so its spread is usually far smaller than the spread of either method alone.

No SciPy: the t distribution comes from the regularized incomplete beta function (a continued fraction,
Numerical Recipes §6.4 / Lentz's method), and its quantile from bisection. The test suite checks them against
published table values.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = [
    "PairedDiff",
    "holm_adjust",
    "min_detectable_difference",
    "one_sided_upper",
    "paired_difference",
    "t_cdf",
    "t_quantile",
    "verdict",
]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def min_detectable_difference(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t-test at level ``alpha`` detects with probability
    ``power``, given ``n`` pairs whose differences have standard deviation ``sd``.

    Uses the usual approximation ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` (the exact value
    needs the noncentral t distribution; the approximation is within a few percent for n >= 5). NaN when
    fewer than two pairs.
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return (t_quantile(1.0 - alpha / 2.0, df) + t_quantile(power, df)) * sd / math.sqrt(n)


@dataclass
class PairedDiff:
    """``A - B`` over the seeds both have. ``ci`` is the 95% t interval of the mean difference; ``wins``
    counts seeds where A > B (``ties`` where equal); ``mdd`` is :func:`min_detectable_difference`; ``p`` is
    the two-sided paired t-test p-value of "mean difference = 0" (NaN with fewer than two pairs)."""

    mean: float
    sd: float
    n: int
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    mdd: float
    seeds: list[int]
    diffs: list[float]
    p: float = math.nan

    @property
    def resolved(self) -> bool:
        """True when the 95% interval excludes 0 (the sign of the difference is resolved)."""
        return self.n >= 2 and (self.ci_low > 0 or self.ci_high < 0)


def paired_difference(
    a: dict[int, float], b: dict[int, float], *, confidence: float = 0.95
) -> PairedDiff | None:
    """Paired difference of two methods given ``{seed: value}`` each; None without a common seed.

    Non-finite values drop their seed from the comparison.
    """
    seeds = sorted(s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s]))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return PairedDiff(mean, math.nan, n, math.nan, math.nan, sum(d > 0 for d in diffs),
                          sum(d == 0 for d in diffs), math.nan, seeds, diffs)
    sd = statistics.stdev(diffs)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return PairedDiff(
        mean=mean,
        sd=sd,
        n=n,
        ci_low=mean - half,
        ci_high=mean + half,
        wins=sum(d > 0 for d in diffs),
        ties=sum(d == 0 for d in diffs),
        mdd=min_detectable_difference(sd, n),
        seeds=seeds,
        diffs=diffs,
        p=_two_sided_p(mean, sd, n),
    )


def _two_sided_p(mean: float, sd: float, n: int) -> float:
    if sd == 0.0:  # every pair differs by the same amount: no spread to test against
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(n))
    return min(1.0, 2.0 * t_cdf(-abs(t), n - 1))


def holm_adjust(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate).

    The i-th smallest of m p-values becomes ``max_{j <= i} min(1, (m - j + 1) * p_(j))``; NaN entries
    (comparisons without a p-value) are left NaN and do not count towards m.
    """
    order = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def one_sided_upper(d: PairedDiff, *, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of the mean difference: ``mean + t(confidence, n-1)·sd/√n``."""
    if d.n < 2:
        return math.nan
    return d.mean + t_quantile(confidence, d.n - 1) * d.sd / math.sqrt(d.n)


def verdict(d: PairedDiff | None, threshold: float) -> str:
    """The decision on the claim "the method gains at least ``threshold`` over the reference":

    ``supported`` when the two-sided 95% interval lies above 0, ``refuted`` when the one-sided 95% upper
    bound lies below ``threshold`` (a gain that large is excluded), else ``unresolved`` (also with fewer
    than two pairs)."""
    if d is None or d.n < 2:
        return "unresolved"
    if d.ci_low > 0:
        return "supported"
    if one_sided_upper(d) < threshold:
        return "refuted"
    return "unresolved"
