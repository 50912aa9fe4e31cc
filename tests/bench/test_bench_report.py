"""Aggregation and report building on synthetic run folders (no training needed)."""

from __future__ import annotations

import csv
import json
import math

import pytest
from bench_fake_runs import run_cli, write_grid, write_run

from unikd.bench.aggregate import aggregate, mean_std
from unikd.bench.collect import collect
from unikd.bench.report import build_report
from unikd.bench.results import load_run, read_metrics


def test_mean_std_sample_std_and_missing_values():
    s = mean_std([70.0, 72.0, 74.0])
    assert s.mean == pytest.approx(72.0) and s.std == pytest.approx(2.0) and s.n == 3
    one = mean_std([5.0, math.nan])
    assert one.mean == 5.0 and math.isnan(one.std) and one.n == 1
    assert mean_std([]).n == 0 and math.isnan(mean_std([]).mean)


def test_aggregate_mean_std_and_delta_to_ce(tmp_path):
    write_grid(tmp_path)
    tracks = aggregate(collect([tmp_path]))
    assert list(tracks) == ["t"]
    groups = {g.label: g for g in tracks["t"]}
    assert set(groups) == {"ce", "kd"}
    ce, kd = groups["ce"], groups["kd"]
    assert ce.seeds == [0, 1, 2] and kd.seeds == [0, 1, 2]  # the unfinished seed 3 is left out
    assert ce.stats["best_top1"].mean == pytest.approx(72.0)
    assert ce.stats["best_top1"].std == pytest.approx(2.0)
    assert kd.stats["best_top1"].mean == pytest.approx(74.0)
    assert kd.stats["best_top1"].std == pytest.approx(3.0)
    assert kd.stats["last_top1"].mean == pytest.approx((71 + 74 + 76) / 3)
    assert kd.stats["seconds_per_epoch"].mean == pytest.approx(3.0)
    assert ce.delta is None
    assert kd.delta["best_top1"] == pytest.approx(2.0)
    assert kd.delta["last_top1"] == pytest.approx((71 + 74 + 76) / 3 - 72.0)
    assert kd.wins == (3, 3)


def test_aggregate_without_ce_has_no_delta(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"kd{seed}", method="kd", seed=seed, curve=[50.0 + seed])
    (group,) = aggregate(collect([tmp_path]))["resnet8"]
    assert group.label == "kd" and group.delta is None and group.wins is None


def test_runs_without_bench_record_grouped_by_config(tmp_path):
    write_run(tmp_path / "a", method="ce", seed=0, curve=[50.0])
    write_run(tmp_path / "b", method="ce", seed=1, curve=[52.0])
    write_run(tmp_path / "c", method="nkd", seed=0, curve=[55.0], teacher_model="resnet32")
    tracks = aggregate(collect([tmp_path]))
    groups = {g.label: g for g in tracks["resnet8"]}
    assert set(groups) == {"ce", "nkd@resnet32"}
    assert groups["ce"].stats["best_top1"].mean == pytest.approx(51.0)
    assert groups["nkd@resnet32"].delta["best_top1"] == pytest.approx(4.0)


def test_duplicate_cells_are_kept_apart(tmp_path):
    write_run(tmp_path / "x" / "r", method="ce", seed=0, curve=[50.0])
    write_run(tmp_path / "y" / "r", method="ce", seed=0, curve=[60.0])
    with pytest.warns(UserWarning, match="both are"):
        results = collect([tmp_path])
    assert sorted(r.label for r in results) == ["ce", "ce[y]"]


def test_unfinished_run_uses_metrics_and_ignores_torn_line(tmp_path):
    run = write_run(
        tmp_path / "r", method="ce", seed=0, curve=[10.0, 30.0, 20.0], finished=False, torn_tail=True
    )
    assert [m["epoch"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
    r = load_run(run)
    assert not r.finished and r.epochs == 3
    assert r.best_top1 == 30.0 and r.best_epoch == 2 and r.last_top1 == 20.0
    assert r.last_ece == pytest.approx(0.03)


def test_build_report_writes_csv_markdown_and_plots(tmp_path):
    write_grid(tmp_path)
    files = build_report([tmp_path], tmp_path / "rep", title="T")
    rows = list(csv.DictReader(files.csv.open()))
    assert len(rows) == 7  # 6 finished + 1 unfinished student; the teacher is not a row
    kd1 = next(r for r in rows if r["method"] == "kd" and r["seed"] == "1")
    assert float(kd1["best_top1"]) == 74.0 and kd1["finished"] == "True" and kd1["track"] == "t"
    assert float(kd1["seconds_per_epoch"]) == 3.0 and kd1["epochs"] == "2"
    md = files.markdown.read_text()
    assert "72.00 ± 2.00" in md  # ce best top-1
    assert "74.00 ± 3.00" in md  # kd best top-1
    assert "+2.00" in md and "3/3" in md
    assert "Unfinished runs" in md and "t/kd/seed3" in md
    assert "## Teachers" in md and "85.00" in md
    pytest.importorskip("matplotlib")
    assert {p.name for p in files.plots} == {"accuracy.png", "curves.png", "paired.png"}
    for p in files.plots:
        assert p.read_bytes()[:4] == b"\x89PNG"
    assert "![accuracy](accuracy.png)" in md


def test_report_cli_rebuilds_from_bench_folder(tmp_path, capsys):
    write_grid(tmp_path / "bench")
    out = tmp_path / "out"
    assert run_cli("report", [str(tmp_path / "bench"), "--out", str(out), "--no-plots"]) == 0
    assert "6/7 student runs finished" in capsys.readouterr().out
    assert (out / "results.csv").is_file() and (out / "report.md").is_file()
    assert not (out / "accuracy.png").exists()


def test_report_cli_errors_clearly(tmp_path, capsys):
    assert run_cli("report", [str(tmp_path / "nope")]) == 2
    assert not (tmp_path / "nope").exists()
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli("report", [str(tmp_path / "empty")]) == 2
    assert "no run folders found" in capsys.readouterr().err


def test_dropped_classes_get_their_csv_columns_and_report_table(tmp_path):
    from unikd.bench.results import CLASS_COLUMNS, CSV_COLUMNS

    write_grid(tmp_path / "plain")
    plain = build_report([tmp_path / "plain"], tmp_path / "rep0", plots=False)
    assert next(csv.reader(plain.csv.open())) == CSV_COLUMNS  # unchanged without dropped classes
    assert "Dropped classes" not in plain.markdown.read_text()
    for label in ("ce", "kd"):
        for seed in (0, 1):
            drop = 10.0 * seed + (5.0 if label == "kd" else 0.0)
            extra = {"dropped_classes": [3, 5], "best_top1_dropped": drop, "best_top1_kept": 80.0,
                     "last_top1_dropped": drop, "last_top1_kept": 79.0,
                     "test_selected_top1_dropped": drop + 1, "test_selected_top1_kept": 78.0,
                     "test_last_top1_dropped": drop + 2, "test_last_top1_kept": 77.0,
                     "bias_shift": 2.0 + seed, "val_selected_biasfix_top1": 70.0,
                     "test_selected_biasfix_top1": 66.0 + seed,
                     "test_selected_biasfix_top1_dropped": drop + 10, "test_selected_biasfix_top1_kept": 77.0}
            rec = {"role": "student", "track": "t", "label": label, "method": label, "seed": seed}
            write_run(tmp_path / "drop" / label / f"seed{seed}", method=label, seed=seed, curve=[60.0, 70.0],
                      record=rec, test={"selected_top1": 65.0, "last_top1": 64.0}, summary_extra=extra)
    files = build_report([tmp_path / "drop"], tmp_path / "rep", plots=False)
    rows = list(csv.DictReader(files.csv.open()))
    assert list(rows[0]) == CSV_COLUMNS[:-1] + CLASS_COLUMNS + ["run_dir"]
    kd1 = next(r for r in rows if r["method"] == "kd" and r["seed"] == "1")
    assert kd1["dropped_classes"] == "3 5" and float(kd1["test_selected_top1_dropped"]) == 16.0
    md = files.markdown.read_text()
    assert "**Dropped classes**" in md and "test top-1 (selected): all" in md
    # kd: dropped top-1 5 and 15 -> selected test 6 and 16 (mean 11, std 7.07); kept 78
    assert "| `kd` | 0,1 | 3 5 | 65.00 ± 0.00 | 11.00 ± 7.07 | 78.00 ± 0.00 |" in md
    # the bias-fixed group follows the selected epoch's test top-1, with b last: kd dropped 15, 25 -> 20
    assert "test top-1 (selected, bias-fixed): all | dropped | kept | b | test top-1 (last): all" in md
    assert ("| `kd` | 0,1 | 3 5 | 65.00 ± 0.00 | 11.00 ± 7.07 | 78.00 ± 0.00 | 66.50 ± 0.71 | 20.00 ± 7.07 "
            "| 77.00 ± 0.00 | 2.50 ± 0.71 | 64.00 ± 0.00 |") in md
    assert float(kd1["bias_shift"]) == 3.0 and float(kd1["test_selected_biasfix_top1_dropped"]) == 25.0
    # a pre-registered family may lead with the top-1 on the dropped classes
    from unikd.bench.spec import Comparison

    comp = Comparison("t", "ce", ["kd"], 1.0, "test_selected_top1_dropped")
    files = build_report([tmp_path / "drop"], tmp_path / "rep2", plots=False, comparisons=[comp])
    md = files.markdown.read_text()
    section = md.split("## Pre-registered comparisons", 1)[1]
    assert "| method | pairs | Δ top-1 dropped classes (selected) [95% CI] | p | Holm p |" in section
    assert "| `kd` | 2 | +5.00 [+5.00, +5.00] * | <0.001 | <0.001 | +5.00 | **supported** |" in section
    # runs without the bias fix (older summaries) get no bias-fixed columns
    for summary in (tmp_path / "drop").glob("*/seed*/summary.json"):
        data = json.loads(summary.read_text())
        summary.write_text(json.dumps({k: v for k, v in data.items() if "bias" not in k}))
    md = build_report([tmp_path / "drop"], tmp_path / "rep3", plots=False).markdown.read_text()
    assert "bias-fixed" not in md and "Dropped classes" in md


def _corrupt_line(run, number: int, junk: bytes = b"\x00\x00garbled\xff") -> None:
    lines = (run / "metrics.jsonl").read_bytes().split(b"\n")
    lines[number - 1] = junk
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines))


def test_corrupt_metrics_lines_are_reported_not_dropped_silently(tmp_path, capsys):
    done = write_run(tmp_path / "done", method="ce", seed=0, curve=[10.0, 20.0, 30.0])
    _corrupt_line(done, 2)
    torn = write_run(tmp_path / "torn", method="ce", seed=1, curve=[10.0, 20.0], torn_tail=True,
                     finished=False)
    r = load_run(done)
    assert r.metrics_corrupt_lines == [2] and [e for e, _ in r.curve] == [1, 3]
    assert load_run(torn).metrics_corrupt_lines == [] and load_run(torn).metrics_torn_line == 3
    assert run_cli("report", [str(tmp_path), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert f"skipped corrupt lines of {done / 'metrics.jsonl'}: line 2" in err
    assert "torn" not in err  # a torn last line of an unfinished run is normal: noted in the report only
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Skipped metrics lines" in md
    assert "done/metrics.jsonl`: 1 corrupt line(s) skipped (line 2)" in md
    assert "torn/metrics.jsonl`: torn last line 3 skipped (the run has not finished" in md


def test_a_torn_last_line_of_a_finished_run_counts_as_corrupt(tmp_path):
    run = write_run(tmp_path / "r", method="ce", seed=0, curve=[10.0, 20.0], torn_tail=True)
    r = load_run(run)
    assert r.finished and r.metrics_corrupt_lines == [3] and r.metrics_torn_line is None
    clean = write_run(tmp_path / "c", method="ce", seed=1, curve=[10.0])
    assert load_run(clean).metrics_corrupt_lines == [] and load_run(clean).metrics_torn_line is None
