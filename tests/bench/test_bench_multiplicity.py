"""p-values, Holm's adjustment, one-sided bounds and verdicts of the bench report, against hand-computed
values and (where installed) SciPy."""

from __future__ import annotations

import math

import pytest
from bench_fake_runs import run_cli, write_run
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.bench.report import build_report
from unikd.bench.spec import Comparison
from unikd.stats import holm_adjust, one_sided_upper, paired_difference, t_quantile, verdict


def _diff(diffs: list[float]):
    return paired_difference({i: d for i, d in enumerate(diffs)}, {i: 0.0 for i in range(len(diffs))})


def test_p_value_closed_forms():
    # df 1 (Cauchy): P(|T| > t) = 1 - 2 atan(t) / pi; diffs 1, 3: mean 2, sd sqrt 2, t = 2 / (sqrt2/sqrt2) = 2
    d = _diff([1.0, 3.0])
    assert d.p == pytest.approx(1 - 2 * math.atan(2.0) / math.pi, abs=1e-12)
    # df 2: P(|T| > t) = 1 - t / sqrt(2 + t^2); diffs 1, 2, 6: mean 3, sd sqrt 7, t = 3 sqrt3 / sqrt7
    d = _diff([1.0, 2.0, 6.0])
    t = 3.0 / (math.sqrt(7.0) / math.sqrt(3.0))
    assert d.p == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert _diff([-1.0, -2.0, -6.0]).p == pytest.approx(d.p, abs=1e-15)  # two-sided
    assert _diff([0.5, 0.5, 0.5]).p == 0.0 and _diff([0.0, 0.0]).p == 1.0  # no spread
    assert math.isnan(_diff([1.0]).p)


def test_p_value_and_bound_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    a = [51.2, 49.8, 50.1, 52.3, 50.0, 49.1, 51.7, 50.9]
    b = [50.0, 50.2, 49.0, 51.1, 50.3, 48.0, 50.2, 50.9]
    d = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    assert d.p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    upper = d.mean + stats.t.ppf(0.95, d.n - 1) * d.sd / math.sqrt(d.n)
    assert one_sided_upper(d) == pytest.approx(upper, rel=1e-9)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    out = holm_adjust([0.01, math.nan, 0.02])  # NaN is not a member of the family
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm_adjust([]) == [] and holm_adjust([0.2]) == [0.2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_properties(ps):
    adj = holm_adjust(ps)
    m = len(ps)
    for p, q in zip(ps, adj):
        assert p <= q + 1e-15 and q <= min(1.0, m * p) + 1e-12  # between raw and Bonferroni
    order = sorted(range(m), key=lambda i: ps[i])
    assert all(adj[order[i]] <= adj[order[i + 1]] + 1e-15 for i in range(m - 1))  # order kept
    # Rejections at 5% are exactly Holm's step-down procedure.
    reject = set()
    for rank, i in enumerate(order):
        if ps[i] > 0.05 / (m - rank):
            break
        reject.add(i)
    assert {i for i in range(m) if adj[i] <= 0.05} == reject


def test_verdicts():
    supported = _diff([1.5, 2.0, 2.5, 1.8, 2.2])
    assert supported.ci_low > 0 and verdict(supported, 1.0) == "supported"
    refuted = _diff([0.1, -0.2, 0.3, 0.0, -0.1, 0.2])  # upper bound well below +1
    assert one_sided_upper(refuted) < 1.0 and refuted.ci_low < 0
    assert verdict(refuted, 1.0) == "refuted"
    wide = _diff([3.0, -2.0, 4.0, -1.0, 0.5])
    assert wide.ci_low < 0 and one_sided_upper(wide) > 1.0 and verdict(wide, 1.0) == "unresolved"
    assert verdict(None, 1.0) == "unresolved" and verdict(_diff([5.0]), 1.0) == "unresolved"
    # the one-sided bound is tighter than the two-sided interval's top
    assert one_sided_upper(wide) < wide.ci_high
    assert one_sided_upper(wide) == pytest.approx(wide.mean + t_quantile(0.95, 4) * wide.sd / math.sqrt(5))


_TEST = {"last_top1": 0.0, "selected_nll": 2.0, "selected_ece": 0.05, "selected_top5": 0.0,
         "last_top5": 0.0, "last_nll": 2.1, "last_ece": 0.06}


def _write_family(root):
    values = {
        "ce": [50.0, 51.0, 49.0, 50.5, 50.0, 49.5],
        "good": [52.0, 53.2, 51.1, 52.4, 52.2, 51.4],  # +2 +-0.2: supported
        "same": [50.1, 50.8, 49.2, 50.4, 50.1, 49.4],  # ~0 +-0.15: refuted for a 1-point gain
        "noisy": [53.0, 49.0, 52.0, 48.5, 52.5, 50.0],  # unresolved
    }
    for label, vals in values.items():
        for seed, v in enumerate(vals):
            write_run(
                root / label / f"seed{seed}", method=label, seed=seed, curve=[v - 1],
                record={"role": "student", "track": "t", "label": label, "seed": seed},
                test={**_TEST, "selected_top1": v},
            )
    return values


def test_report_comparisons_give_p_holm_bound_and_verdict(tmp_path):
    values = _write_family(tmp_path / "runs")
    comps = [Comparison("t", "ce", ["good", "same", "noisy"], 1.0), Comparison("t", "good", ["same"])]
    files = build_report([tmp_path / "runs"], tmp_path / "rep", plots=False, comparisons=comps)
    md = files.markdown.read_text()
    section = md.split("## Pre-registered comparisons", 1)[1]
    ce = dict(enumerate(values["ce"]))
    diffs = {k: paired_difference(dict(enumerate(v)), ce) for k, v in values.items()}
    holm = holm_adjust([diffs[k].p for k in ("good", "same", "noisy")])
    for label, h, word in zip(("good", "same", "noisy"), holm, ("supported", "refuted", "unresolved")):
        d = diffs[label]
        row = next(line for line in section.splitlines() if line.startswith(f"| `{label}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "6" and cells[2].startswith(f"{d.mean:+.2f} [")
        assert cells[3] == ("<0.001" if d.p < 0.001 else f"{d.p:.3f}")
        assert cells[4] == ("<0.001" if h < 0.001 else f"{h:.3f}")
        assert cells[5] == f"{one_sided_upper(d):+.2f}" and cells[6] == f"**{word}**"
    second = section.split("against `good`", 1)[1]
    assert "verdict" not in second.split("\n\n", 2)[1]  # no threshold: no verdict column
    assert "| `same` | 6 |" in second


def test_report_cli_reads_the_spec_comparisons(tmp_path, capsys):
    _write_family(tmp_path / "runs")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: fam\nout_dir: out\nseeds: 6\noverrides: {epochs: 1, data: {name: digits}}\n"
        "tracks:\n  - {name: t, student: tiny_cnn, methods: [ce, good, same, noisy]}\n"
        "comparisons:\n  - {track: t, reference: ce, threshold: 1}\n"
    )
    assert run_cli("report", [str(tmp_path / "runs"), "--no-plots", "--spec", str(spec)]) == 0
    md = (tmp_path / "runs" / "report.md").read_text()
    assert md.startswith("# Benchmark fam") and "**supported**" in md and "**refuted**" in md
    missing = str(tmp_path / "nope.yaml")
    assert run_cli("report", [str(tmp_path / "runs"), "--no-plots", "--spec", missing]) == 2
    assert "does not exist" in capsys.readouterr().err
