"""Markdown tables of the test-split results and the paired comparisons of one track."""

from __future__ import annotations

import math

from unikd.bench.aggregate import REFERENCES, Group, Stat, paired_metrics
from unikd.stats import PairedDiff, holm_adjust

# metric -> (title, scale, decimals, higher is better)
METRIC_INFO = {
    "test_selected_top1": ("top-1 (selected)", 1.0, 2, True),
    "test_last_top1": ("top-1 (last)", 1.0, 2, True),
    "test_selected_nll": ("NLL (selected)", 1.0, 3, False),
    "test_last_nll": ("NLL (last)", 1.0, 3, False),
    "test_selected_ece": ("ECE % (selected)", 100.0, 2, False),
    "test_last_ece": ("ECE % (last)", 100.0, 2, False),
    "last_train_top1": ("train top-1 (last)", 1.0, 1, True),
    "best_top1": ("best val top-1", 1.0, 2, True),
    "last_top1": ("last val top-1", 1.0, 2, True),
}
METRIC_INFO["test_selected_top5"] = ("top-5 (selected)", 1.0, 2, True)
METRIC_INFO["test_last_top5"] = ("top-5 (last)", 1.0, 2, True)
for _when, _title in (("best", "best val"), ("last", "last val"), ("test_selected", "selected"),
                     ("test_last", "last")):
    for _group in ("dropped", "kept"):
        METRIC_INFO[f"{_when}_top1_{_group}"] = (f"top-1 {_group} classes ({_title})", 1.0, 2, True)
METRIC_INFO["test_selected_biasfix_top1"] = ("top-1 bias-fixed (selected)", 1.0, 2, True)
METRIC_INFO["val_selected_biasfix_top1"] = ("val top-1 bias-fixed (selected)", 1.0, 2, True)
for _group in ("dropped", "kept"):
    METRIC_INFO[f"test_selected_biasfix_top1_{_group}"] = (
        f"top-1 {_group} classes bias-fixed (selected)", 1.0, 2, True)
_TEST_TABLE = (
    "test_selected_top1",
    "test_last_top1",
    "test_selected_nll",
    "test_last_nll",
    "test_selected_ece",
    "test_last_ece",
    "best_top1",
    "last_train_top1",
)


def _pm(stat: Stat, key: str) -> str:
    _, scale, dec, _ = METRIC_INFO[key]
    if stat.n == 0:
        return "–"
    if math.isnan(stat.std):
        return f"{stat.mean * scale:.{dec}f}"
    return f"{stat.mean * scale:.{dec}f} ± {stat.std * scale:.{dec}f}"


def fmt_p(p: float) -> str:
    """A p-value for a table: three decimals, ``<0.001`` below that, ``–`` when there is none."""
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def family_holm(rows: list[dict[str, PairedDiff]], keys: tuple[str, ...]) -> list[dict[str, float]]:
    """Holm-adjusted p-values of a family of comparisons (one row per method), metric by metric."""
    out: list[dict[str, float]] = [{} for _ in rows]
    for key in keys:
        raw = [row[key].p if key in row else math.nan for row in rows]
        for adj, value in zip(out, holm_adjust(raw)):
            adj[key] = value
    return out


def diff_cell(d: PairedDiff | None, key: str, holm: float | None = None) -> str:
    """``+1.23 [+0.10, +2.36] *``, with ``(Holm p …)`` appended when ``holm`` is given."""
    text = _diff(d, key)
    if holm is not None and d is not None and math.isfinite(holm):
        text += f" (Holm p {fmt_p(holm)})"
    return text


def _diff(d: PairedDiff | None, key: str) -> str:
    if d is None:
        return "–"
    _, scale, dec, _ = METRIC_INFO[key]
    if d.n < 2:
        return f"{d.mean * scale:+.{dec}f} (n={d.n})"
    mark = " *" if d.resolved else ""
    return f"{d.mean * scale:+.{dec}f} [{d.ci_low * scale:+.{dec}f}, {d.ci_high * scale:+.{dec}f}]{mark}"


def test_table(groups: list[Group]) -> list[str]:
    """Mean ± std over seeds of the test-split metrics (empty when the runs have none)."""
    if paired_metrics(groups)[0] != "test_selected_top1":
        return []
    head = ["method", "seeds"] + [METRIC_INFO[k][0] for k in _TEST_TABLE]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [f"`{g.label}`", str(len(g.runs))] + [_pm(g.stats[k], k) for k in _TEST_TABLE]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_tables(groups: list[Group]) -> list[str]:
    """One table per reference method (CE, KD) present in the track."""
    keys = paired_metrics(groups)
    first = keys[0]
    out: list[str] = []
    for ref in REFERENCES:
        rows = [g for g in groups if ref in g.paired]
        if not rows:
            continue
        head = ["method", "pairs", f"Δ {METRIC_INFO[first][0]} [95% CI]", "p", "Holm p", "seeds won"]
        head += ["detectable at 80% power"] + [f"Δ {METRIC_INFO[k][0]} [95% CI]" for k in keys[1:]]
        out += [f"**Paired differences against `{ref}`** (method − `{ref}`, seed by seed)", ""]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        holms = family_holm([g.paired[ref] for g in rows], keys)
        for g, holm in zip(rows, holms):
            diffs = g.paired[ref]
            main = diffs.get(first)
            _, scale, dec, higher = METRIC_INFO[first]
            won = "–"
            if main is not None:
                better = sum((d > 0) if higher else (d < 0) for d in main.diffs)
                won = f"{better}/{main.n}" + (f" ({main.ties} tied)" if main.ties else "")
            mdd = "–" if main is None or math.isnan(main.mdd) else f"±{main.mdd * scale:.{dec}f}"
            p = fmt_p(main.p) if main else "–"
            cells = [f"`{g.label}`", str(main.n if main else 0), _diff(main, first), p]
            cells += [fmt_p(holm.get(first, math.nan)), won, mdd]
            cells += [diff_cell(diffs.get(k), k, holm.get(k)) for k in keys[1:]]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if out:
        out += [
            "Each interval is the mean paired difference ± t(0.975, n−1)·sd/√n over the seeds both methods "
            "ran; `*` marks intervals that exclude 0. p is the two-sided paired t-test of a zero mean "
            "difference; Holm p adjusts it for the other methods of the same table (one family per "
            "reference method and metric), controlling the chance of any false positive in the table at "
            "the 5% level. 'Detectable at 80% power' is the smallest true "
            "difference a two-sided paired t-test at the 5% level would find 4 times in 5 with this many "
            "seeds and the observed spread of the differences: differences smaller than it are not resolved "
            "by this grid, whatever their sign here.",
            "",
        ]
    return out
