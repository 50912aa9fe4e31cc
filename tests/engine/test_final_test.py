"""Validation-based selection with one test evaluation at the end (final_test), and the train top-1 log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from harness_support import base_overrides

from unikd.data import InMemoryLoader, create_dataset
from unikd.engine import load_config, train
from unikd.engine.eval.evaluate import evaluate
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.models import create_model


def _score(npz: Path, state: dict, seed: int = 0) -> float:
    model = create_model("tiny_cnn", num_classes=4)
    model.load_state_dict(state)
    test = create_dataset("npz", root=npz, split="test")
    train_ds = create_dataset("npz", root=npz, split="train")
    test.mean, test.std = train_ds.mean, train_ds.std
    return evaluate(model, InMemoryLoader(test, 64, train=False, seed=seed), num_classes=4)["top1"]


def test_final_test_scores_selected_and_last_on_the_whole_test_split(npz_data, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, base_overrides(
        npz_data, out, epochs=3, **{"data.val_split": 8, "data.split_seed": 0, "data.samples_per_class": 12,
                                    "data.subset_test": "false"}))
    summary = train(cfg)
    assert summary["test_count"] == 32  # 4 classes x 8: samples_per_class did not cut the test split
    saved = json.loads((out / "summary.json").read_text())
    assert saved["test_selected_top1"] == summary["test_selected_top1"]
    # the numbers are those of best.pt (the selected epoch) and last.pt, recomputed independently
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["epoch"] == summary["best_epoch"]
    assert summary["test_selected_top1"] == pytest.approx(_score(npz_data, best["model"]))
    assert summary["test_last_top1"] == pytest.approx(_score(npz_data, last["model"]))
    for when in ("selected", "last"):
        assert {f"test_{when}_{k}" for k in ("top1", "top5", "nll", "ece")} <= set(summary)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["train/top1"] <= 100.0 for r in records)


def test_no_final_test_without_a_validation_split_or_when_off(npz_data, tmp_path):
    summary = train(load_config(None, base_overrides(npz_data, tmp_path / "a", epochs=1)))
    assert "test_selected_top1" not in summary  # validation is the test split: nothing to add
    summary = train(load_config(None, base_overrides(
        npz_data, tmp_path / "b", epochs=1, **{"data.val_split": 8, "final_test": "false"})))
    assert "test_selected_top1" not in summary


def test_train_top1_counts_hits_of_the_augmented_batches(npz_data, tmp_path):
    # With lr=0 the model never changes, so the running train top-1 equals the accuracy of the initial
    # weights on the epoch's augmented batches, which we recompute from the loader.
    out = tmp_path / "frozen"
    cfg = load_config(None, base_overrides(npz_data, out, epochs=1, **{"optim.lr": 1e-12,
                                                                        "optim.weight_decay": 0.0}))
    torch.manual_seed(0)
    train(cfg)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    state = load_checkpoint(out / "last.pt")["model"]
    model = create_model("tiny_cnn", num_classes=4)
    model.load_state_dict(state)
    model.train()  # BatchNorm in train mode, as during the step
    ds = create_dataset("npz", root=npz_data, split="train")
    loader = InMemoryLoader(ds, 32, train=True, seed=0)
    loader.set_epoch(0)
    hits = n = 0
    with torch.no_grad():
        for batch in loader:
            hits += int((model(batch.images).argmax(1) == batch.target).sum())
            n += batch.images.shape[0]
    assert record["train/top1"] == pytest.approx(100.0 * hits / n, abs=100.0 / n + 1e-9)
