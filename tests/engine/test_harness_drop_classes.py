"""data.drop_classes through the harness: the run never trains on the dropped labels, the preflight names
them, summary.json / metrics.jsonl carry top-1 on the dropped and the kept classes (validation and final
test), the bias-shift fix is chosen on validation and reported on test, ``unikd eval --classes`` and
``--bias-shift`` agree, and a teacher-output cache serves only the stream it replayed."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from harness_support import base_overrides

from unikd.cache import CacheMismatchError
from unikd.cache.build import build_teacher_cache
from unikd.engine import evaluate_checkpoint, load_config, train
from unikd.engine.loop.setup import build
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
DIGITS = ["model=tiny_cnn", "data.name=digits", "data.val_split=10", "data.batch_size=64", "epochs=2",
          "sched.milestones=[1]", "device=cpu", "tensorboard=false", "data.drop_classes=[3, 5]"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("drop") / "run"
    torch.set_num_threads(1)
    summary = train(load_config(None, [*DIGITS, f"out_dir={out}"]))
    return out, summary


def test_the_run_never_trains_on_a_dropped_label(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="unikd"):
        c = build(load_config(None, [*DIGITS, f"out_dir={tmp_path}"]), CPU)
    assert "dropped classes  2 of 10 classes removed from the training split: 3, 5 (" in caplog.text
    assert c.num_classes == 10 and c.model.fc.out_features == 10  # the head keeps every class
    seen = set()
    for epoch in range(2):
        c.train_loader.set_epoch(epoch)
        for batch in c.train_loader:
            seen |= set(batch.target.tolist())
    assert seen == set(range(10)) - {3, 5}
    assert {3, 5} <= set(c.val_loader.dataset.labels.tolist())
    c.remove_taps()


def test_summary_and_metrics_carry_the_per_class_top1(digits_run):
    out, summary = digits_run
    assert summary["finished"] and summary["dropped_classes"] == [3, 5]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert {"val/top1_dropped", "val/top1_kept"} <= set(r)
    best = next(r for r in records if r["epoch"] == summary["best_epoch"])
    assert summary["best_top1_dropped"] == best["val/top1_dropped"]
    assert (summary["last_top1_dropped"], summary["last_top1_kept"]) == (records[-1]["val/top1_dropped"],
                                                                         records[-1]["val/top1_kept"])
    # 10 validation images per class: the overall top-1 is the count-weighted mean of the two groups
    assert summary["last_top1"] == pytest.approx((2 * summary["last_top1_dropped"]
                                                  + 8 * summary["last_top1_kept"]) / 10)
    for when in ("selected", "last"):
        for group in ("dropped", "kept"):
            assert 0.0 <= summary[f"test_{when}_top1_{group}"] <= 100.0
    # the checkpoint evaluated on those classes gives the same numbers
    val = evaluate_checkpoint(out / "best.pt", device="cpu", classes=[5, 3])
    assert val["classes"] == [3, 5] and (val["count_classes"], val["count_rest"]) == (20, 80)
    assert val["top1_classes"] == pytest.approx(summary["best_top1_dropped"])
    assert val["top1_rest"] == pytest.approx(summary["best_top1_kept"])
    test = evaluate_checkpoint(out / "best.pt", device="cpu", split="test", classes=[3, 5])
    assert test["top1_classes"] == pytest.approx(summary["test_selected_top1_dropped"])
    assert test["top1_rest"] == pytest.approx(summary["test_selected_top1_kept"])


def test_eval_cli_prints_the_classes_and_the_rest(digits_run, capsys):
    from unikd.cli import main

    out, summary = digits_run
    assert main(["eval", str(out / "best.pt"), "--device", "cpu", "--classes", "3,5"]) == 0
    text = capsys.readouterr().out
    assert f"top-1 classes 3, 5   {summary['best_top1_dropped']:.2f}%  (20 images)" in text
    assert f"top-1 other classes  {summary['best_top1_kept']:.2f}%  (80 images)" in text
    assert main(["eval", str(out / "best.pt"), "--device", "cpu", "--classes", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count_classes"] == 10
    assert main(["eval", str(out / "best.pt"), "--classes", "12"]) == 1
    assert "classes must name at least one class in 0..9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(out / "best.pt"), "--classes", "3,x"])
    assert "comma-separated class indices" in capsys.readouterr().err


def test_the_bias_shift_is_chosen_on_validation_and_reported_on_test(digits_run, capsys):
    from unikd.cli import main
    from unikd.engine.eval.bias_shift import DEFAULT_GRID

    out, summary = digits_run
    b = summary["bias_shift"]
    assert b in DEFAULT_GRID and summary["bias_shift_grid"] == "0:20:0.25"
    # b = 0 is in the grid, so the selected weights' validation top-1 can only rise
    assert summary["val_selected_biasfix_top1"] >= summary["best_top1"]
    for key in ("test_selected_biasfix_top1", "test_selected_biasfix_top1_dropped",
                "test_selected_biasfix_top1_kept"):
        assert 0.0 <= summary[key] <= 100.0
    if b == 0:
        assert summary["test_selected_biasfix_top1"] == pytest.approx(summary["test_selected_top1"])
    # unikd eval --bias-shift on the selected checkpoint: the same b (its drop_classes), the same numbers
    res = evaluate_checkpoint(out / "best.pt", device="cpu", bias_shift=True)
    assert res["split"] == "test" and res["classes"] == [3, 5] and res["bias_shift"] == b
    assert res["bias_val_top1_unshifted"] == pytest.approx(summary["best_top1"])
    assert res["bias_val_top1"] == pytest.approx(summary["val_selected_biasfix_top1"])
    assert res["top1"] == pytest.approx(summary["test_selected_top1"])
    assert res["biasfix_top1"] == pytest.approx(summary["test_selected_biasfix_top1"])
    assert res["biasfix_top1_classes"] == pytest.approx(summary["test_selected_biasfix_top1_dropped"])
    assert res["biasfix_top1_rest"] == pytest.approx(summary["test_selected_biasfix_top1_kept"])
    n_d, n_k = res["count_classes"], res["count_rest"]  # the overall top-1 is the groups' weighted mean
    dropped, kept = summary["test_selected_biasfix_top1_dropped"], summary["test_selected_biasfix_top1_kept"]
    assert summary["test_selected_biasfix_top1"] == pytest.approx((n_d * dropped + n_k * kept) / (n_d + n_k))
    assert main(["eval", str(out / "best.pt"), "--device", "cpu", "--bias-shift"]) == 0
    text = capsys.readouterr().out
    assert f"bias shift b         {b:g} (chosen on val, 100 images" in text
    assert f"top-1 with b         {summary['test_selected_biasfix_top1']:.2f}%" in text
    assert main(["eval", str(out / "best.pt"), "--device", "cpu", "--bias-grid", "0,1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bias_grid"] == [0.0, 1.0]
    assert main(["eval", str(out / "best.pt"), "--bias-shift", "--split", "val"]) == 1
    assert "score it on another split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(out / "best.pt"), "--bias-grid", "0:1"])
    assert "START:STOP:STEP" in capsys.readouterr().err


def test_runs_without_dropped_classes_write_no_per_class_keys(npz_data, tmp_path):
    summary = train(load_config(None, base_overrides(npz_data, tmp_path, epochs=1)))
    assert not [k for k in summary if "dropped" in k or "kept" in k or "bias" in k]
    with pytest.raises(ValueError, match="dropped no classes"):
        evaluate_checkpoint(tmp_path / "best.pt", device="cpu", bias_shift=True)
    assert "val/top1_dropped" not in (tmp_path / "metrics.jsonl").read_text()


def test_a_cache_serves_only_the_stream_it_replayed(npz_data, teacher_ckpt, tmp_path):
    kd = base_overrides(npz_data, tmp_path, method="kd", **{"teacher.model": "tiny_cnn",
                                                              "teacher.checkpoint": str(teacher_ckpt)})
    drop = "data.drop_classes=[1]"
    full = build_teacher_cache(load_config(None, kd), tmp_path / "full", dtype="fp32", show_progress=False)
    with pytest.raises(CacheMismatchError, match=r"built for the full training set, but this run drops "
                                                 r"classes \[1\] \(data.drop_classes\)"):
        build(load_config(None, kd + [drop, f"teacher.cache={full}"]), CPU)
    # a cache built with the student's own config (same teacher) replays its stream: bit-identical student
    reduced = build_teacher_cache(load_config(None, kd + [drop]), tmp_path / "reduced", dtype="fp32",
                                  show_progress=False)
    with pytest.raises(CacheMismatchError, match=r"built without classes \[1\], but this run keeps every"):
        build(load_config(None, kd + [f"teacher.cache={reduced}"]), CPU)
    live = train(load_config(None, kd + [drop, f"out_dir={tmp_path / 'live'}"]))
    cached = train(load_config(None, kd + [drop, f"teacher.cache={reduced}",
                                           f"out_dir={tmp_path / 'cached'}"]))
    assert live["finished"] and cached["finished"]
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("live", "cached"))
    assert all(torch.equal(a[k], b[k]) for k in a)
