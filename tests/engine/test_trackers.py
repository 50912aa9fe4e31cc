"""metrics.csv (always) and the optional wandb / MLflow trackers, run offline, including resume."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
from pathlib import Path

import pytest
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.run.trackers import Trackers

HAS_WANDB = importlib.util.find_spec("wandb") is not None
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
TERMS = ("train/loss", "train/ce", "train/nkd")
METRICS = ("lr", "val/top1", "val/top5", "val/nll", "val/ece", "images_per_s", "epoch_seconds")


def _nkd(npz: Path, teacher: Path, out: Path, **extra: object) -> list[str]:
    opts = {"method": "nkd", "teacher.model": "tiny_cnn", "teacher.checkpoint": str(teacher),
            "loss.gamma": 2.0, **extra}
    return base_overrides(npz, out, **opts)


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _csv(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _same_rows(jsonl: list[dict], rows: list[dict]) -> None:
    assert len(jsonl) == len(rows)
    for j, c in zip(jsonl, rows):
        assert list(c) == list(j)  # same columns, same order
        for k, v in j.items():
            assert (c[k] == "") if v is None else float(c[k]) == pytest.approx(v, rel=1e-12), k


def test_metrics_csv_matches_jsonl_and_is_rebuilt_on_resume(npz_data, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, _nkd(npz_data, teacher_ckpt, out, eval_every=2)))
    _same_rows(_jsonl(out), _csv(out))
    assert _csv(out)[0]["val/top1"] == ""  # epoch 1 skipped by eval_every=2: an empty cell, like null
    # A run killed after writing a CSV row that its checkpoint does not know about: resume drops the row.
    with open(out / "metrics.csv", "a") as fh:
        fh.write("3,0.1,9,9,9,,,,,1,1\n")
    train(load_config(None, _nkd(npz_data, teacher_ckpt, out, eval_every=2, epochs=3, resume="auto")))
    rows = _csv(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    _same_rows(_jsonl(out), rows)


def test_unknown_tracker_is_a_config_error():
    with pytest.raises(ValueError, match="unknown tracker 'wandbb' \\(did you mean 'wandb'\\?\\)"):
        load_config(None, ["trackers=[wandbb]"])
    with pytest.raises(ValueError, match="listed twice"):
        load_config(None, ["trackers=[mlflow, mlflow]"])
    assert load_config(None, ["trackers=[wandb, mlflow]"]).trackers == ["wandb", "mlflow"]


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_package_names_the_extra(name, tmp_path, monkeypatch):
    real = importlib.import_module

    def fake(mod, *a, **k):
        if mod.split(".")[0] == name:
            raise ImportError(f"No module named {mod!r}")
        return real(mod, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=rf"pip install 'unikd\[{name}\]'"):
        Trackers(tmp_path, [name])


@pytest.mark.skipif(not HAS_WANDB, reason="wandb not installed (pip install 'unikd[wandb]')")
def test_wandb_offline_logs_config_terms_metrics_summary_and_resumes_the_same_run(
    npz_data, teacher_ckpt, tmp_path, monkeypatch
):
    from wandb_records import logged

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "unikd-test")
    out = tmp_path / "wb"
    train(load_config(None, _nkd(npz_data, teacher_ckpt, out, trackers="[wandb]")))
    run_id = json.loads((out / "trackers.json").read_text())["wandb"]["id"]
    (first,) = sorted(out.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    got = logged(first)
    assert got["config"]["method"] == "nkd" and got["config"]["loss"]["gamma"] == 2.0
    assert got["config"]["teacher"]["model"] == "tiny_cnn"
    steps = [h for h in got["history"] if "train/loss" in h]
    assert [h["_step"] for h in steps] == [1, 2]
    expected = _jsonl(out)
    for h, want in zip(steps, expected):
        for key in TERMS + METRICS:
            assert h[key] == pytest.approx(want[key]), key
    summary = json.loads((out / "summary.json").read_text())
    assert got["summary"]["finished"] is True
    assert got["summary"]["best_top1"] == pytest.approx(summary["best_top1"])

    train(load_config(None, _nkd(npz_data, teacher_ckpt, out, trackers="[wandb]", epochs=3, resume="auto")))
    assert json.loads((out / "trackers.json").read_text())["wandb"] == {"id": run_id, "last_epoch": 3}
    files = sorted(out.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    later = [h for f in files if f != first for h in logged(f)["history"] if "train/loss" in h]
    assert [h["_step"] for h in later] == [3]  # the same run continues; epochs 1-2 are not sent again


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow not installed (pip install 'unikd[mlflow]')")
def test_mlflow_file_store_logs_config_terms_metrics_summary_and_resumes_the_same_run(
    npz_data, teacher_ckpt, tmp_path, monkeypatch
):
    import mlflow

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this flag
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "unikd-test")
    out = tmp_path / "ml"
    train(load_config(None, _nkd(npz_data, teacher_ckpt, out, trackers="[mlflow]")))
    run_id = json.loads((out / "trackers.json").read_text())["mlflow"]["id"]
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "ml"
    params = run.data.params
    assert params["method"] == "nkd" and params["loss.gamma"] == "2.0" and params["data.name"] == "npz"
    expected = _jsonl(out)
    for key in TERMS + METRICS:
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key
        for m in history:
            assert m.value == pytest.approx(expected[m.step - 1][key]), key
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["summary/best_top1"] == pytest.approx(summary["best_top1"])
    assert json.loads(Path(client.download_artifacts(run_id, "summary.json", str(tmp_path))).read_text()) == \
        summary

    train(load_config(None, _nkd(npz_data, teacher_ckpt, out, trackers="[mlflow]", epochs=3, resume="auto")))
    assert json.loads((out / "trackers.json").read_text())["mlflow"]["id"] == run_id
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/nkd")) == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
