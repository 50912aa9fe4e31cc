"""Mean ± std over seeds per (track, method), the difference to the CE baseline of the same track, and paired
per-seed differences (with 95% intervals) against the track's CE and KD runs."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from unikd.bench.results import TEST_KEYS, RunResult
from unikd.stats import PairedDiff, paired_difference

# Metrics averaged over seeds: RunResult attribute -> report column title.
METRICS = {
    "best_top1": "best top-1",
    "last_top1": "last top-1",
    "last_top5": "top-5",
    "last_ece": "ECE",
    "last_nll": "NLL",
    "seconds_per_epoch": "s/epoch",
}
# Further per-run numbers averaged over seeds (test split after validation-based selection; train top-1).
EXTRA_METRICS = (*TEST_KEYS, "last_train_top1")
# Metrics compared seed by seed against the reference methods, in report order.
PAIRED_METRICS = ("test_selected_top1", "test_last_top1", "test_selected_nll", "test_selected_ece")
# Reference methods of the paired comparisons (group labels), when the track has them.
REFERENCES = ("ce", "kd", "dkd")


@dataclass
class Stat:
    mean: float
    std: float  # sample standard deviation (n - 1); NaN for a single value
    n: int


def mean_std(values: list[float]) -> Stat:
    """Mean and sample standard deviation of the finite values (missing/NaN values dropped)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Stat(math.nan, math.nan, 0)
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return Stat(statistics.fmean(vals), std, len(vals))


@dataclass
class Group:
    """The runs of one method in one track."""

    track: str
    label: str
    method: str
    runs: list[RunResult]
    stats: dict[str, Stat] = field(default_factory=dict)
    # method minus the track's CE baseline, for best_top1 and last_top1 (difference of the means);
    # None for the baseline itself or when the track has no CE baseline.
    delta: dict[str, float] | None = None
    # seeds on which the method beat the CE run of the same seed (best top-1), out of the seeds both have
    wins: tuple[int, int] | None = None
    # reference label -> metric -> paired difference (this method minus the reference, seed by seed)
    paired: dict[str, dict[str, PairedDiff]] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)


def baseline_label(groups: list[Group]) -> str | None:
    """The CE baseline of a track: the group labelled ``ce``, else the only group whose method is ce."""
    labels = [g.label for g in groups]
    if "ce" in labels:
        return "ce"
    ce = [g.label for g in groups if g.method == "ce"]
    return ce[0] if len(ce) == 1 else None


def aggregate(results: list[RunResult], *, finished_only: bool = True) -> dict[str, list[Group]]:
    """Student runs grouped by track (in first-seen order), then method (first-seen order).

    With ``finished_only`` (the default), runs without ``finished: true`` are left out of the statistics.
    """
    tracks: dict[str, dict[str, Group]] = {}
    for r in results:
        if r.role != "student" or (finished_only and not r.finished):
            continue
        groups = tracks.setdefault(r.track, {})
        g = groups.setdefault(r.label, Group(track=r.track, label=r.label, method=r.method, runs=[]))
        g.runs.append(r)
    out: dict[str, list[Group]] = {}
    for track, groups in tracks.items():
        glist = list(groups.values())
        for g in glist:
            g.stats = {k: mean_std([getattr(r, k) for r in g.runs]) for k in (*METRICS, *EXTRA_METRICS)}
        base_label = baseline_label(glist)
        base = groups.get(base_label) if base_label else None
        if base is not None:
            base_by_seed = {r.seed: r.best_top1 for r in base.runs}
            for g in glist:
                if g is base:
                    continue
                g.delta = {k: g.stats[k].mean - base.stats[k].mean for k in ("best_top1", "last_top1")}
                pairs = [(r.best_top1, base_by_seed[r.seed]) for r in g.runs if r.seed in base_by_seed]
                g.wins = (sum(a > b for a, b in pairs), len(pairs))
        _pair(glist, groups)
        out[track] = glist
    return out


def paired_metrics(groups: list[Group]) -> tuple[str, ...]:
    """The metrics to compare: the test-split ones when every run of the track has them, else validation
    top-1 (best and last epoch) for runs that validated on the test split."""
    runs = [r for g in groups for r in g.runs]
    if runs and all(math.isfinite(r.test_selected_top1) for r in runs):
        return PAIRED_METRICS
    return ("best_top1", "last_top1")


def _pair(glist: list[Group], by_label: dict[str, Group]) -> None:
    keys = paired_metrics(glist)
    for ref_label in REFERENCES:
        ref = by_label.get(ref_label)
        if ref is None:
            continue
        for g in glist:
            if g is ref:
                continue
            diffs = {}
            for key in keys:
                d = paired_difference(
                    {r.seed: getattr(r, key) for r in g.runs}, {r.seed: getattr(r, key) for r in ref.runs}
                )
                if d is not None:
                    diffs[key] = d
            if diffs:
                g.paired[ref_label] = diffs
