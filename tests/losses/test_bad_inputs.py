"""Every registered loss on bad inputs: non-finite logits give NaN (never a finite number, never an internal
error), and bad soft labels (non-finite, negative, rows not summing to 1) raise a ValueError naming them.

Losses are called by their parameter names, so a new loss whose positional arguments are ``*_logits`` and
``target`` is covered without touching this file; one that needs other inputs must be added to ``EXTRA``.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from unikd.losses import LOSS_FUNCTIONS

NONFINITE = (math.nan, math.inf, -math.inf)
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Inputs other than logits and target, per loss name: callable (n, c) -> tensor. (None of today's.)
EXTRA: dict[str, dict[str, object]] = {}


def _positional(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def call(name: str, logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Call loss ``name`` with ``logits`` for its ``*_logits`` arguments (in order) and ``target``."""
    fn = LOSS_FUNCTIONS[name]
    args, it = [], iter(logits)
    for arg in _positional(fn):
        if arg.endswith("logits"):
            args.append(next(it))
        elif arg == "target":
            args.append(target)
        elif arg in EXTRA.get(name, {}):
            args.append(EXTRA[name][arg](*logits[0].shape))
        else:
            pytest.fail(f"loss {name!r} takes {arg!r}: add how to build it to EXTRA in {__file__}")
    return fn(*args)


def n_logits(name: str) -> int:
    return sum(a.endswith("logits") for a in _positional(LOSS_FUNCTIONS[name]))


def uses_target(name: str) -> bool:
    return "target" in _positional(LOSS_FUNCTIONS[name])


def test_every_loss_is_reachable():
    for name in LOSS_FUNCTIONS:
        assert n_logits(name) >= 1, name


@st.composite
def poisoned(draw):
    """(name, logits with >= 1 non-finite entry, target, dtype)."""
    name = draw(st.sampled_from(sorted(LOSS_FUNCTIONS)))
    dtype = draw(st.sampled_from(DTYPES))
    n, c = draw(st.integers(1, 5)), draw(st.integers(2, 12))
    k = n_logits(name)
    elems = st.floats(-30, 30)
    logits = [torch.from_numpy(draw(hnp.arrays(np.float64, (n, c), elements=elems))) for _ in range(k)]
    y = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    # Poison 1..3 entries anywhere (target columns included: masking must not hide them).
    for _ in range(draw(st.integers(1, 3))):
        which = draw(st.integers(0, k - 1))
        row = draw(st.integers(0, n - 1))
        col = draw(st.one_of(st.just(int(y[row])), st.integers(0, c - 1)))
        logits[which][row, col] = draw(st.sampled_from(NONFINITE))
    if draw(st.booleans()):  # a valid mixup soft label instead of indices
        y2 = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
        lam = draw(st.floats(0.05, 0.95))
        eye = torch.eye(c, dtype=torch.float64)
        y = (lam * eye[y] + (1 - lam) * eye[y2]).to(torch.float32 if dtype == torch.float64 else dtype)
    return name, [x.to(dtype) for x in logits], y


@settings(max_examples=300, deadline=None)
@given(case=poisoned())
def test_non_finite_logits_give_nan(case):
    name, logits, y = case
    leaves = [x.clone().requires_grad_(True) for x in logits]
    loss = call(name, leaves, y)
    assert loss.dim() == 0 and torch.isnan(loss), f"{name}: {loss} for non-finite logits"
    loss.backward()  # no internal error in backward either


BAD_LABELS = {
    "sums to 2": lambda c: torch.full((3, c), 2.0 / c),
    "sums to 0": lambda c: torch.zeros(3, c),
    "nan": lambda c: torch.full((3, c), 1.0 / c).index_put_((torch.tensor([1]), torch.tensor([0])),
                                                          torch.tensor(math.nan)),
    "inf": lambda c: torch.full((3, c), 1.0 / c).index_put_((torch.tensor([2]), torch.tensor([1])),
                                                          torch.tensor(math.inf)),
    "negative": lambda c: torch.eye(c)[:3] * 2 - torch.eye(c)[1:4] if c > 3 else -torch.eye(c)[[0, 1, 0]],
}


@pytest.mark.parametrize("name", [n for n in sorted(LOSS_FUNCTIONS) if uses_target(n)])
@pytest.mark.parametrize("kind", sorted(BAD_LABELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bad_soft_labels_raise(name, kind, dtype):
    c = 5
    logits = [torch.randn(3, c) for _ in range(n_logits(name))]
    label = BAD_LABELS[kind](c).to(dtype)
    with pytest.raises(ValueError, match="soft-label target"):
        call(name, logits, label)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from([n for n in sorted(LOSS_FUNCTIONS) if uses_target(n)]),
       dtype=st.sampled_from(DTYPES), c=st.integers(2, 300), lam=st.floats(0.0, 1.0))
def test_valid_soft_labels_in_any_dtype_are_accepted(name, dtype, c, lam):
    # mixup rounded to the label dtype still passes the row-sum tolerance (docs/losses.md)
    g = torch.Generator().manual_seed(c)
    y1, y2 = torch.randint(0, c, (4,), generator=g), torch.randint(0, c, (4,), generator=g)
    eye = torch.eye(c)
    label = (lam * eye[y1] + (1 - lam) * eye[y2]).to(dtype)
    loss = call(name, [torch.randn(4, c, generator=g) for _ in range(n_logits(name))], label)
    assert torch.isfinite(loss)


def test_reported_cases():
    nan = math.nan
    from unikd.losses import dkd_loss, tfkd_loss, uskd_loss, zipf_ls_loss

    assert torch.isnan(zipf_ls_loss(torch.tensor([[nan, 1.0]]), torch.tensor([0])))  # was 0.0
    z = torch.randn(4, 100)
    z[0, 3] = nan  # was "RuntimeError: index 127 is out of bounds"
    assert torch.isnan(uskd_loss(z, torch.randn(4, 100), torch.tensor([1, 2, 3, 4])))
    assert torch.isnan(zipf_ls_loss(z, torch.tensor([1, 2, 3, 4])))
    with pytest.raises(ValueError, match="row 0 sums to 2"):  # was a finite 8.12
        dkd_loss(torch.randn(4, 16), torch.randn(4, 16), torch.full((4, 16), 2 / 16))
    with pytest.raises(ValueError, match="non-finite"):  # was a finite 0.55
        tfkd_loss(torch.randn(4, 16), torch.full((4, 16), nan))
