"""Hypothesis strategies and helpers for token tensors: (B, T, V) logits with ignored positions."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

IGNORE = -100


@st.composite
def token_batches(draw, *, max_b=3, max_t=4, max_v=7, bound=8.0, ignore_prob=0.3, flat=None, count=2):
    """``(logits..., labels)``: ``count`` float64 tensors (B, T, V) or (N, V) and int64 labels with IGNORE."""
    b = draw(st.integers(1, max_b))
    t = draw(st.integers(1, max_t))
    v = draw(st.integers(2, max_v))
    use_flat = draw(st.booleans()) if flat is None else flat
    shape = (b * t, v) if use_flat else (b, t, v)
    elems = st.floats(-bound, bound, allow_nan=False, allow_infinity=False)
    logits = [torch.from_numpy(draw(hnp.arrays(np.float64, shape, elements=elems))) for _ in range(count)]
    ids = draw(st.lists(st.integers(0, v - 1), min_size=b * t, max_size=b * t))
    drop = draw(st.lists(st.floats(0, 1), min_size=b * t, max_size=b * t))
    labels = torch.tensor([IGNORE if d < ignore_prob else i for i, d in zip(ids, drop)], dtype=torch.int64)
    return (*logits, labels.reshape(shape[:-1]))


def kept(labels: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """The rows of each ``(..., V)`` tensor (and the labels) where the label is not IGNORE."""
    mask = labels.reshape(-1) != IGNORE
    out = [x.reshape(-1, x.shape[-1])[mask] for x in tensors]
    return [*out, labels.reshape(-1)[mask]]
