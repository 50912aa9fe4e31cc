"""``unikd demo``: the --quick smoke run end to end, its outputs, and the option errors."""

import json
import math
import sys

import pytest
import torch

from unikd.cli import main
from unikd.demo import DEMO_METHODS, STUDENT_MODEL, TEACHER_MODEL, format_table, write_plot

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install 'unikd[demo]')")


@pytest.mark.timeout(120)
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu", "--seed", "3"]) == 0
    assert torch.get_num_threads() == threads  # the demo restores the thread count
    text = capsys.readouterr().out

    result = json.loads((out / "results.json").read_text())
    names = [r["method"] for r in result["rows"]]
    assert names == ["teacher", *DEMO_METHODS]
    assert [r["model"] for r in result["rows"]] == [TEACHER_MODEL] + [STUDENT_MODEL] * len(DEMO_METHODS)
    assert result["epochs"] == 1 and result["seed"] == 3 and result["quick"] is True
    for r in result["rows"]:
        assert 0.0 <= r["top1"] <= r["top5"] <= 100.0
        assert math.isfinite(r["nll"]) and r["nll"] > 0 and 0.0 <= r["ece"] <= 1.0 and r["seconds"] > 0
        run = out / r["method"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["finished"] and summary["seed"] == 3
        assert summary["method"] == ("ce" if r["method"] == "teacher" else r["method"])
        assert summary["last_top1"] == pytest.approx(r["top1"])
        assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    # distillation students really used the demo teacher
    kd_cfg = (out / "kd" / "config.yaml").read_text()
    assert str(out / "teacher") in kd_cfg and f"model: {TEACHER_MODEL}" in kd_cfg

    # the printed table has a row per run, with the numbers from results.json
    for r in result["rows"]:
        line = next(line for line in text.splitlines() if line.startswith(r["method"] + " "))
        assert f"{r['top1']:.2f}" in line and f"{r['ece']:.4f}" in line
    assert "| method |" in (out / "results.md").read_text()
    if result["plot"] is not None:
        png = (out / "demo.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in text


ROWS = [{"method": "teacher", "model": "resnet20", "top1": 52.0, "top5": 90.0, "nll": 1.0, "ece": 0.1,
         "seconds": 2.0},
        {"method": "kd", "model": "tiny_cnn", "top1": 60.0, "top5": 95.0, "nll": 0.9, "ece": 0.05,
         "seconds": 1.0}]


def test_plot_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    hist = {"kd": [{"epoch": 1, "val/top1": 50.0, "val/ece": 0.1}]}
    assert write_plot(hist, ROWS, tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()


def test_plot_written(tmp_path):
    pytest.importorskip("matplotlib")
    hist = {"teacher": [{"epoch": e, "val/top1": 50.0 + e, "val/ece": 0.1} for e in (1, 2)],
            "kd": [{"epoch": 1, "val/top1": None}, {"epoch": 2, "val/top1": 60.0, "val/ece": 0.05}]}
    path = write_plot(hist, ROWS, tmp_path / "sub" / "p.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"


def test_format_table():
    rows = [{"method": "kd", "model": "tiny_cnn", "top1": 97.1831, "top5": 100.0, "nll": 0.12345,
             "ece": 0.0321, "seconds": 12.34},
            {"method": "nkd", "model": "tiny_cnn", "top1": None, "top5": None, "nll": None, "ece": None,
             "seconds": 1.0}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["method", "model", "top-1", "top-5", "NLL", "ECE", "seconds"]
    assert lines[1].split() == ["kd", "tiny_cnn", "97.18", "100.00", "0.1235", "0.0321", "12.3"]
    assert lines[2].split()[2:6] == ["-", "-", "-", "-"]


def test_help_and_bad_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--epochs", "0"])
    assert exc.value.code == 2
    assert "--epochs: must be >= 1" in capsys.readouterr().err


def test_plot_accuracy_axes_start_at_zero(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    seen = []
    monkeypatch.setattr(plt, "close", lambda fig: seen.append(fig))
    high = [dict(r, top1=97.0 + i) for i, r in enumerate(ROWS)]  # finals near 100: no zoom to ~87%
    hist = {"teacher": [{"epoch": 1, "val/top1": 97.0}], "kd": [{"epoch": 1, "val/top1": 98.0}]}
    write_plot(hist, high, tmp_path / "p.png")
    curve, top1, _ = seen[0].axes
    assert curve.get_ylim()[0] == 0.0 and top1.get_ylim()[0] == 0.0
