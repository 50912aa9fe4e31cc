"""``evaluate``: the loader-driven metrics equal the metrics of all logits at once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unikd.data import ArrayDataset, InMemoryLoader
from unikd.engine import evaluate
from unikd.engine.eval.metrics import classification_metrics


def test_evaluate_matches_metrics_of_all_logits_and_restores_train_mode():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (37, 1, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 6, (37,))
    ds = ArrayDataset(images, labels, [str(i) for i in range(6)], mean=[0.5], std=[0.25])
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Dropout(0.5))
    model.train()
    loader = InMemoryLoader(ds, 8, train=False)  # 5 batches, the last one partial
    got = evaluate(model, loader, num_classes=6)
    assert model.training  # the caller's mode is restored
    model.eval()
    with torch.no_grad():
        logits = model((images.float() / 255 - 0.5) / 0.25)
    want = classification_metrics(logits, labels)
    assert got["count"] == 37
    for key in ("top1", "top5", "nll", "ece"):
        assert got[key] == pytest.approx(float(want[key]), rel=1e-6, abs=1e-9), key


def test_bf16_evaluation_is_close_to_fp32():
    torch.manual_seed(0)
    ds = ArrayDataset(torch.randint(0, 256, (64, 3, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (64,)),
                      ["a", "b", "c"], mean=[0.5] * 3, std=[0.25] * 3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    fp32 = evaluate(model, InMemoryLoader(ds, 16, train=False), num_classes=3)
    bf16 = evaluate(model, InMemoryLoader(ds, 16, train=False), num_classes=3, precision="bf16")
    assert bf16["nll"] == pytest.approx(fp32["nll"], rel=0.05)
