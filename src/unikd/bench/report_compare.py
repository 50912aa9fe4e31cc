"""The pre-registered comparisons of a bench spec (its ``comparisons:`` list) as report tables: paired
differences with p-values, Holm adjustment within each family and metric, and a verdict when the family
names a decision threshold."""

from __future__ import annotations

import math

from unikd.bench.aggregate import Group, paired_metrics
from unikd.bench.report_stats import METRIC_INFO, diff_cell, family_holm, fmt_p
from unikd.bench.spec import Comparison
from unikd.stats import PairedDiff, one_sided_upper, paired_difference, verdict

__all__ = ["comparison_tables", "family_diffs", "family_metrics"]


def family_metrics(groups: list[Group], comp: Comparison) -> tuple[str, ...]:
    """The family's paired metrics: its ``metric`` first when it names one, then the report's others."""
    keys = paired_metrics(groups)
    return keys if comp.metric is None else (comp.metric, *(k for k in keys if k != comp.metric))


def family_diffs(groups: list[Group], comp: Comparison) -> list[tuple[str, dict[str, PairedDiff]]]:
    """``(method label, metric -> method − reference)`` for each method of the family that has runs."""
    by_label = {g.label: g for g in groups}
    ref = by_label.get(comp.reference)
    if ref is None:
        return []
    keys = family_metrics(groups, comp)
    out = []
    for label in comp.methods:
        g = by_label.get(label)
        if g is None:
            continue
        diffs = {}
        for key in keys:
            d = paired_difference(
                {r.seed: r.value(key) for r in g.runs}, {r.seed: r.value(key) for r in ref.runs}
            )
            if d is not None:
                diffs[key] = d
        out.append((label, diffs))
    return out


def _table(groups: list[Group], comp: Comparison) -> list[str]:
    rows = family_diffs(groups, comp)
    if not rows:
        return [f"No finished runs of `{comp.reference}` and its comparators yet.", ""]
    keys = family_metrics(groups, comp)
    first = keys[0]
    _, scale, dec, _ = METRIC_INFO[first]
    head = ["method", "pairs", f"Δ {METRIC_INFO[first][0]} [95% CI]", "p", "Holm p"]
    if comp.threshold is not None:
        head += ["one-sided 95% upper bound", f"verdict (gain ≥ {comp.threshold:g})"]
    head += [f"Δ {METRIC_INFO[k][0]} [95% CI]" for k in keys[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    holms = family_holm([diffs for _, diffs in rows], keys)
    for (label, diffs), holm in zip(rows, holms):
        main = diffs.get(first)
        cells = [f"`{label}`", str(main.n if main else 0), diff_cell(main, first)]
        cells += [fmt_p(main.p if main else math.nan), fmt_p(holm.get(first, math.nan))]
        if comp.threshold is not None:
            bound = one_sided_upper(main) if main else math.nan
            cells += ["–" if math.isnan(bound) else f"{bound * scale:+.{dec}f}"]
            cells += [f"**{verdict(main, comp.threshold / scale)}**"]
        cells += [diff_cell(diffs.get(k), k, holm.get(k)) for k in keys[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def comparison_tables(tracks: dict[str, list[Group]], comparisons: list[Comparison]) -> list[str]:
    """The ``## Pre-registered comparisons`` section (empty without comparisons)."""
    if not comparisons:
        return []
    out = [
        "## Pre-registered comparisons",
        "",
        "The families named in the bench spec, each method minus the family's reference, paired by seed. "
        "p: two-sided paired t-test of a zero mean difference; Holm p: adjusted within the family, metric "
        "by metric. Where the spec names a threshold (the smallest gain its claim is about), the verdict is "
        "*supported* when the two-sided 95% interval lies above 0, *refuted* when the one-sided 95% upper "
        "bound lies below the threshold, and *unresolved* otherwise. Verdicts use the unadjusted interval: "
        "a spec that decides one claim names it alone in its family.",
        "",
    ]
    for comp in comparisons:
        groups = tracks.get(comp.track, [])
        out += [f"**Track `{comp.track}`: against `{comp.reference}`** ({', '.join(comp.methods)})", ""]
        out += _table(groups, comp) if groups else ["No finished runs in this track yet.", ""]
    return out
