"""ClassificationMeter / classification_metrics against naive per-sample references."""

import math

import numpy as np
import pytest
import torch

from unikd.engine.eval.metrics import ClassificationMeter, classification_metrics


def _naive(logits, target, n_bins=15):
    """Straight from the definitions, one sample at a time, in float64 numpy."""
    x = logits.double().numpy()
    y = target.numpy()
    n, c = x.shape
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top1 = top5 = nll = 0.0
    bins = [[] for _ in range(n_bins)]
    for i in range(n):
        order = np.argsort(-x[i], kind="stable")
        top1 += order[0] == y[i]
        top5 += y[i] in order[: min(5, c)]
        nll += -math.log(p[i, y[i]])
        conf = p[i].max()
        b = min(max(math.ceil(conf * n_bins) - 1, 0), n_bins - 1)
        bins[b].append((conf, float(order[0] == y[i])))
    ece = sum(len(b) / n * abs(np.mean([a for _, a in b]) - np.mean([cf for cf, _ in b])) for b in bins if b)
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "nll": nll / n, "ece": ece, "count": n}


@pytest.mark.parametrize("c", [3, 10])
def test_matches_naive_reference(c):
    g = torch.Generator().manual_seed(c)
    logits = torch.randn(200, c, generator=g) * 3
    target = torch.randint(0, c, (200,), generator=g)
    got = classification_metrics(logits, target)
    want = _naive(logits, target)
    assert got["count"] == 200
    for k in ("top1", "top5", "nll", "ece"):
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


def test_known_values():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [10.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, 0, 1])
    m = classification_metrics(logits, target)
    assert m["top1"] == 50.0
    assert m["top5"] == 100.0  # C < 5: top-5 is top-C
    conf = 1 / (1 + 2 * math.exp(-10))
    assert m["ece"] == pytest.approx(abs(0.5 - conf))


def test_batches_and_merged_states_equal_one_pass():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(90, 7, generator=g)
    target = torch.randint(0, 7, (90,), generator=g)
    a, b = ClassificationMeter(7), ClassificationMeter(7)
    for i in range(0, 60, 16):
        a.update(logits[i : min(i + 16, 60)], target[i : min(i + 16, 60)])
    b.update(logits[60:], target[60:])
    state = a.state() + b.state()  # what all_reduce(SUM) does across ranks
    assert state.dtype == torch.float64
    merged = ClassificationMeter(7)
    merged.load_state(state)
    whole = classification_metrics(logits, target)
    got = merged.compute()
    assert got["count"] == 90
    for k in ("top1", "top5", "nll", "ece"):
        assert got[k] == pytest.approx(whole[k], rel=1e-12)


def test_soft_targets_use_argmax():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(50, 6, generator=g)
    hard = torch.randint(0, 6, (50,), generator=g)
    soft = torch.nn.functional.one_hot(hard, 6).float() * 0.7 + 0.05
    assert classification_metrics(logits, soft) == classification_metrics(logits, hard)


def test_top5_uses_five():
    logits = torch.arange(10.0).repeat(2, 1)  # class 9 is the top prediction, 5..9 the top-5
    m = classification_metrics(logits, torch.tensor([5, 4]))
    assert m["top1"] == 0.0 and m["top5"] == 50.0


def test_extreme_logits_stay_finite():
    logits = torch.tensor([[1e4, -1e4], [-1e4, 1e4]])
    m = classification_metrics(logits, torch.tensor([0, 0]))
    assert m["top1"] == 50.0 and m["nll"] == pytest.approx(1e4) and m["ece"] == pytest.approx(0.5)


def test_errors():
    meter = ClassificationMeter(4)
    with pytest.raises(ValueError, match="before any sample"):
        meter.compute()
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        meter.update(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        meter.update(torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="integer"):
        meter.update(torch.zeros(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        meter.load_state(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationMeter(0)


@pytest.mark.parametrize("classes", [[0], [2, 5], list(range(7)), [6]])
def test_per_class_top1_matches_a_naive_count_and_sums_across_shards(classes):
    g = torch.Generator().manual_seed(len(classes))
    logits = torch.randn(90, 7, generator=g)
    target = torch.randint(0, 6, (90,), generator=g)  # class 6 never occurs
    hit = logits.argmax(1) == target
    mask = torch.isin(target, torch.tensor(classes))
    want = 100.0 * float(hit[mask].sum()) / int(mask.sum()) if int(mask.sum()) else None
    meter = ClassificationMeter(7, per_class=True)
    meter.update(logits, target)
    top1, count = meter.class_top1(classes)
    assert count == int(mask.sum()) and (top1 == want if want is None else top1 == pytest.approx(want))
    # two shards whose summed state gives the same numbers (what all_reduce does under DDP)
    a, b = ClassificationMeter(7, per_class=True), ClassificationMeter(7, per_class=True)
    a.update(logits[:40], target[:40])
    b.update(logits[40:], target[40:])
    a.load_state(a.state() + b.state())
    assert a.class_top1(classes) == (top1, count)
    assert a.compute() == pytest.approx(classification_metrics(logits, target))
    assert meter.compute() == pytest.approx(classification_metrics(logits, target))  # unchanged by per_class


def test_per_class_top1_needs_the_option_and_valid_classes():
    meter = ClassificationMeter(4)
    with pytest.raises(ValueError, match="per_class=True"):
        meter.class_top1([1])
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 3\]"):
        ClassificationMeter(4, per_class=True).class_top1([4])
