"""paired_rows: the paired-difference rows of the LM benchmark tables, checked by hand."""

from __future__ import annotations

import math

import pytest

from unikd.lm.example_report import paired_rows


def test_paired_rows_by_hand():
    runs = {
        "a": {0: {"v": 1.0}, 1: {"v": 2.0}, 2: {"v": 4.0}},
        "b": {0: {"v": 2.0}, 1: {"v": 2.5}, 2: {"v": 4.0}},
    }
    (row,) = paired_rows("a", "b", runs, (("v", "metric"),))
    diffs = [-1.0, -0.5, 0.0]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
    want = (
        f"| a − b | metric | {(2 + 2.5 + 4) / 3:.3f} | {7 / 3:.3f} | {mean:+.3f} "
        f"[{mean - half:+.3f}, {mean + half:+.3f}] | 2/3 |"
    )
    assert row == want


def test_paired_rows_needs_both_arms():
    with pytest.raises(KeyError):
        paired_rows("a", "missing", {"a": {0: {"v": 1.0}}}, (("v", "metric"),))
