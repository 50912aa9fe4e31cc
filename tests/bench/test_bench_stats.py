"""Paired statistics of the bench report, checked against hand-computed and published values."""

from __future__ import annotations

import math

import pytest
from bench_fake_runs import write_run

from unikd.bench.aggregate import aggregate
from unikd.bench.collect import collect
from unikd.bench.report import build_report
from unikd.stats import min_detectable_difference, paired_difference, t_cdf, t_quantile


@pytest.mark.parametrize(
    "p, df, expected",
    [  # Student t tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2), 6 significant digits
        (0.975, 1, 12.7062),
        (0.975, 4, 2.77645),
        (0.975, 9, 2.26216),
        (0.975, 30, 2.04227),
        (0.8, 4, 0.940965),
        (0.9, 2, 1.88562),
        (0.995, 30, 2.74999),
    ],
)
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, rel=2e-5)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, rel=2e-5)
    assert t_cdf(expected, df) == pytest.approx(p, abs=2e-6)


def test_t_cdf_df1_is_cauchy_and_large_df_is_normal():
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        normal = 0.5 * (1 + math.erf(t / math.sqrt(2)))
        assert t_cdf(t, 1e6) == pytest.approx(normal, abs=1e-5)


def test_paired_difference_by_hand():
    # diffs 1, 2, 3, 4, 6: mean 3.2, sd sqrt(((-2.2)^2+(-1.2)^2+(-0.2)^2+0.8^2+2.8^2)/4) = sqrt(3.7)
    a = {0: 11.0, 1: 12.0, 2: 13.0, 3: 14.0, 4: 16.0, 9: 99.0}  # seed 9 has no partner: left out
    b = {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0, 7: 0.0}
    d = paired_difference(a, b)
    sd = math.sqrt(3.7)
    half = 2.7764451051977987 * sd / math.sqrt(5)
    assert d.n == 5 and d.seeds == [0, 1, 2, 3, 4]
    assert d.mean == pytest.approx(3.2) and d.sd == pytest.approx(sd)
    assert (d.ci_low, d.ci_high) == (pytest.approx(3.2 - half), pytest.approx(3.2 + half))
    assert d.wins == 5 and d.ties == 0 and d.resolved
    assert d.mdd == pytest.approx((2.7764451051977987 + 0.9409645772352633) * sd / math.sqrt(5))


def test_paired_difference_unresolved_ties_and_edge_cases():
    d = paired_difference({0: 1.0, 1: 0.0, 2: 5.0}, {0: 0.0, 1: 1.0, 2: 5.0})
    assert d.mean == 0.0 and d.wins == 1 and d.ties == 1 and not d.resolved
    single = paired_difference({0: 2.0}, {0: 1.0})
    assert single.n == 1 and math.isnan(single.ci_low) and not single.resolved
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    assert paired_difference({0: float("nan"), 1: 2.0}, {0: 1.0, 1: 1.0}).n == 1
    assert math.isnan(min_detectable_difference(1.0, 1))


def _grid(tmp_path):
    """ce, kd, nkd over seeds 0-4 with known test numbers."""
    ce = [50.0, 51.0, 49.0, 50.5, 50.0]
    kd = [52.0, 52.0, 51.0, 52.5, 51.0]   # kd - ce: 2, 1, 2, 2, 1
    nkd = [52.5, 51.5, 52.0, 52.0, 51.5]  # nkd - kd: 0.5, -0.5, 1, -0.5, 0.5
    for label, values in (("ce", ce), ("kd", kd), ("nkd", nkd)):
        for seed, v in enumerate(values):
            write_run(
                tmp_path / label / f"seed{seed}",
                method=label,
                seed=seed,
                curve=[30.0, 40.0, v - 1],
                record={"role": "student", "track": "t", "label": label, "seed": seed},
                test={"selected_top1": v, "last_top1": v - 0.5, "selected_nll": 2.0, "selected_ece": 0.05,
                      "selected_top5": v + 20, "last_top5": v + 19, "last_nll": 2.1, "last_ece": 0.06},
            )
    return ce, kd, nkd


def test_report_paired_tables_against_ce_and_kd(tmp_path):
    _grid(tmp_path / "runs")
    groups = {g.label: g for g in aggregate(collect([tmp_path / "runs"]))["t"]}
    kd_ce = groups["kd"].paired["ce"]["test_selected_top1"]
    assert kd_ce.mean == pytest.approx(1.6) and kd_ce.wins == 5 and kd_ce.resolved
    nkd_kd = groups["nkd"].paired["kd"]["test_selected_top1"]
    assert nkd_kd.mean == pytest.approx(0.2) and nkd_kd.wins == 3 and not nkd_kd.resolved
    assert "kd" not in groups["kd"].paired and "ce" not in groups["ce"].paired
    assert groups["nkd"].stats["test_selected_top1"].mean == pytest.approx(51.9)
    files = build_report([tmp_path / "runs"], tmp_path / "rep", plots=False)
    md = files.markdown.read_text()
    assert "**Paired differences against `ce`**" in md and "**Paired differences against `kd`**" in md
    assert "against `dkd`" not in md  # a reference the track does not have gets no table
    sd = math.sqrt(sum((x - 0.2) ** 2 for x in (0.5, -0.5, 1.0, -0.5, 0.5)) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)
    nkd, kd = [52.5, 51.5, 52.0, 52.0, 51.5], [52.0, 52.0, 51.0, 52.5, 51.0]
    p = paired_difference(dict(enumerate(nkd)), dict(enumerate(kd))).p
    row = f"| `nkd` | 5 | +0.20 [{0.2 - half:+.2f}, {0.2 + half:+.2f}] | {p:.3f} | {p:.3f} | 3/5 |"
    # family against kd: ce (p ~0.002) and nkd (p ~0.5), so Holm keeps nkd's p (max(2 p_ce, p_nkd))
    assert row in md
    assert "top-1 (selected)" in md and "51.90 ± " in md
    csv_text = files.csv.read_text()
    assert "test_selected_top1" in csv_text.splitlines()[0]


def test_dkd_is_a_reference_too(tmp_path):
    _, _, nkd = _grid(tmp_path / "runs")
    dkd = [52.0, 51.0, 52.5, 51.0, 51.5]  # nkd - dkd: 0.5, 0.5, -0.5, 1, 0
    for seed, v in enumerate(dkd):
        write_run(
            tmp_path / "runs" / "dkd" / f"seed{seed}", method="dkd", seed=seed, curve=[30.0, v - 1],
            record={"role": "student", "track": "t", "label": "dkd", "seed": seed},
            test={"selected_top1": v, "last_top1": v, "selected_nll": 2.0, "selected_ece": 0.05,
                  "selected_top5": v + 20, "last_top5": v + 19, "last_nll": 2.1, "last_ece": 0.06},
        )
    groups = {g.label: g for g in aggregate(collect([tmp_path / "runs"]))["t"]}
    d = groups["nkd"].paired["dkd"]["test_selected_top1"]
    assert d.n == 5 and d.mean == pytest.approx(sum(a - b for a, b in zip(nkd, dkd)) / 5) and d.wins == 3
    md = build_report([tmp_path / "runs"], tmp_path / "rep", plots=False).markdown.read_text()
    assert "**Paired differences against `dkd`**" in md


def test_report_paired_plot(tmp_path):
    pytest.importorskip("matplotlib")
    _grid(tmp_path / "runs")
    files = build_report([tmp_path / "runs"], tmp_path / "rep", plots=True)
    assert (tmp_path / "rep" / "paired.png") in files.plots
    assert (tmp_path / "rep" / "paired.png").stat().st_size > 10_000


def test_runs_without_test_numbers_compare_validation(tmp_path):
    for label, v in (("ce", 40.0), ("ls", 41.0)):
        for seed in range(3):
            write_run(tmp_path / label / f"s{seed}", method=label, seed=seed, curve=[v + seed],
                      record={"role": "student", "track": "t", "label": label, "seed": seed})
    groups = {g.label: g for g in aggregate(collect([tmp_path]))["t"]}
    d = groups["ls"].paired["ce"]
    assert set(d) == {"best_top1", "last_top1"} and d["best_top1"].mean == pytest.approx(1.0)
    assert d["best_top1"].sd == 0.0 and d["best_top1"].resolved
