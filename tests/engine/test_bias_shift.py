"""The bias-shift fix (Hinton et al. 2015, §3): the grid search for one constant added to the dropped classes'
logits, on hand-made logits whose best constant is known, its tie rule, ``b = 0`` always in the grid, and the
model helpers agreeing with the classification meter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from unikd.engine.eval.bias_shift import (
    DEFAULT_GRID,
    ShiftedLogits,
    grid_hits,
    make_grid,
    parse_grid,
    search_bias_shift,
    search_on_loader,
    select_bias,
    shift_logits,
)
from unikd.engine.eval.evaluate import evaluate
from unikd.engine.eval.metrics import classification_metrics

# Three classes, class 2 dropped. Each row is right for a known range of b (added to column 2):
#   row 0, target 2: right for b > 2.1      row 1, target 2: right for b > 0.7
#   row 2, target 0: right for b < 2.2      row 3, target 1: right for b < 2.6
# so the hits are 2 on [0, 0.7), 3 on (0.7, 2.1), 4 on (2.1, 2.2), 3 on (2.2, 2.6) and 2 above 2.6.
LOGITS = torch.tensor([[1.0, 0.0, -1.1], [0.0, 0.5, -0.2], [2.2, 0.0, 0.0], [0.0, 3.0, 0.4]])
TARGET = torch.tensor([2, 2, 0, 1])


def test_the_known_best_constant_is_found():
    found = search_bias_shift(LOGITS, TARGET, [2], grid=[0.0, 0.5, 1.0, 1.5, 2.0, 2.15, 2.4, 3.0])
    assert found.bias == 2.15
    assert found.hits == (2, 2, 3, 3, 3, 4, 3, 2)
    assert (found.top1, found.top1_unshifted, found.count) == (100.0, 50.0, 4)
    assert not found.at_edge


def test_ties_go_to_the_smallest_shift():
    # 1, 1.5, 2 and 2.4 all give 3 hits: the smallest |b| wins
    assert search_bias_shift(LOGITS, TARGET, [2], grid=[0.0, 1.0, 1.5, 2.0, 2.4]).bias == 1.0
    # equal |b|: the smaller b; a shift that only ties with b = 0 leaves b = 0
    assert select_bias([3, 2, 3], [-1.0, 0.0, 1.0]) == 0
    assert select_bias([2, 2, 2], [-1.0, 0.0, 1.0]) == 1
    assert search_bias_shift(LOGITS, TARGET, [2], grid=[0.0, 0.25, 0.5]).bias == 0.0


def test_zero_is_always_in_the_grid_so_validation_top1_never_drops():
    # a grid without 0 whose every value is worse than no shift: 0 is added and chosen
    found = search_bias_shift(LOGITS, TARGET, [2], grid=[3.0, 5.0])
    assert found.grid == (0.0, 3.0, 5.0) and found.bias == 0.0 and found.at_edge is False
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(64, 6, generator=gen) * 3
        target = torch.randint(0, 6, (64,), generator=gen)
        found = search_bias_shift(logits, target, [1, 4], grid=[-2.0, 0.5, 1.0, 4.0])
        assert 0.0 in found.grid and found.top1 >= found.top1_unshifted
        assert found.top1 == max(found.hits) * 100.0 / 64
        # b = 0 is the meter's own top-1
        assert found.top1_unshifted == pytest.approx(classification_metrics(logits, target)["top1"])


def test_grid_hits_match_a_per_row_count():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 5, generator=gen) * 4
    target = torch.randint(0, 5, (50,), generator=gen)
    grid = (0.0, 0.5, 1.5, 3.0, 7.0)
    naive = []
    for b in grid:
        z = logits.clone()
        z[:, [0, 3]] += b
        naive.append(float((z.argmax(1) == target).sum()))
    assert grid_hits(logits, target, [3, 0], grid).tolist() == naive
    # soft targets are scored against their argmax class, as the meter does
    soft = torch.nn.functional.one_hot(target, 5).float() * 0.8 + 0.04
    assert grid_hits(logits, soft, [0, 3], grid).tolist() == naive


def test_shift_logits_leaves_the_input_and_the_other_columns_alone():
    x = torch.zeros(2, 4, dtype=torch.float64)
    y = shift_logits(x, [1, 3], 2.5)
    assert y.dtype == torch.float32 and x.abs().sum() == 0
    assert y.tolist() == [[0.0, 2.5, 0.0, 2.5]] * 2
    with pytest.raises(ValueError, match=r"at least one class in 0\.\.3"):
        shift_logits(x, [4], 1.0)
    with pytest.raises(ValueError, match=r"at least one class in 0\.\.3"):
        shift_logits(x, [], 1.0)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        shift_logits(torch.zeros(3), [0], 1.0)


def test_grids_parse_and_refuse_bad_text():
    assert DEFAULT_GRID[0] == 0.0 and DEFAULT_GRID[-1] == 20.0 and len(DEFAULT_GRID) == 81
    assert DEFAULT_GRID[1] == 0.25
    assert parse_grid("1:2:0.5") == (0.0, 1.0, 1.5, 2.0)
    assert parse_grid("0:1:0.3") == (0.0, 0.3, 0.6, 0.9)
    assert parse_grid("3, -1,0,3") == (-1.0, 0.0, 3.0)
    assert make_grid([-0.0, 2]) == (0.0, 2.0)
    for bad in ("a:b:c", "0:1:0", "2:1:0.5", "0:1", "x", "0:1e9:1e-9"):
        with pytest.raises(ValueError, match="START:STOP:STEP"):
            parse_grid(bad)
    with pytest.raises(ValueError, match="finite"):
        parse_grid("0,inf")
    with pytest.raises(ValueError, match="same non-zero length"):
        select_bias([1, 2], [0.0])


class _Fixed(nn.Module):
    """A "model" that returns row i of ``table`` for the image holding the value i."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.flatten(1)[:, 0].long()]


def _loader(n: int, target: torch.Tensor, batch: int):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    return [SimpleNamespace(images=images[i:i + batch], target=target[i:i + batch])
            for i in range(0, n, batch)]


def test_the_loader_search_and_the_shifted_model_agree_with_the_pure_functions():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(40, 6, generator=gen) * 3
    logits[:, 2] -= 4.0  # an under-predicted class, as after training without it
    target = torch.randint(0, 6, (40,), generator=gen)
    model = _Fixed(logits)
    found = search_on_loader(model, _loader(40, target, 7), classes=[2], device="cpu")
    assert found == search_bias_shift(logits, target, [2])
    assert found.bias > 0 and found.top1 > found.top1_unshifted
    groups = {"dropped": [2], "kept": [0, 1, 3, 4, 5]}
    shifted = evaluate(ShiftedLogits(model, [2], found.bias), _loader(40, target, 9), num_classes=6,
                       device="cpu", class_groups=groups)
    assert shifted["top1"] == pytest.approx(found.top1)
    z = shift_logits(logits, [2], found.bias)
    hit = z.argmax(1) == target
    assert shifted["top1_dropped"] == pytest.approx(100.0 * hit[target == 2].float().mean().item())
    assert shifted["top1_kept"] == pytest.approx(100.0 * hit[target != 2].float().mean().item())
