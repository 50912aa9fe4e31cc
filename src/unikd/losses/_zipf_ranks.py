"""Zipf rank weights: each class's rank within its row of scores, turned into ``1 / rank**power``.

Used by USKD's non-target soft labels and Zipf's label smoothing (both rank the classes of every sample).
The ranks come from one values-only sort of float64 keys that carry the class index in their unused low
mantissa bits (:func:`_sorted_keys`), the CPU path through numpy, whose sort is about twice torch's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

__all__ = ["zipf_rank_weights"]

_F32_MAX = torch.finfo(torch.float32).max

_SORT_POOL: ThreadPoolExecutor | None = None


def _sort_rows_numpy(a: np.ndarray) -> np.ndarray:
    """Ascending sort of each row; numpy's vectorised (AVX-512) sort releases the GIL, so large batches are
    split over torch's intra-op thread count."""
    workers = min(torch.get_num_threads(), a.shape[0], a.size // 65536)
    if workers < 2:
        return np.sort(a, axis=1)
    global _SORT_POOL
    if _SORT_POOL is None or _SORT_POOL._max_workers < workers:
        _SORT_POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unikd-sort")
    out = np.empty_like(a)
    bounds = np.linspace(0, a.shape[0], workers + 1).astype(int)

    def sort_part(lo: int, hi: int) -> None:
        out[lo:hi] = np.sort(a[lo:hi], axis=1)

    list(_SORT_POOL.map(sort_part, bounds[:-1], bounds[1:]))
    return out


def _sorted_keys(scores: Tensor, low_mask: int) -> tuple[Tensor, Tensor]:
    """Classes in ascending score order and the row-sorted int64 bit patterns of the float64 keys
    ``float32 score | (low_mask - class)``, both ``(N, C)`` int64.

    Each float32 score, widened to float64, has 29 unused low mantissa bits; writing ``low_mask - class``
    there makes every key unique without changing the order of distinct scores (the class comes back from
    the low bits), so one values-only sort gives the permutation: no argsort, no second sort to invert it.
    Among equal scores >= 0 the lower class index gets the larger key.
    """
    c = scores.shape[1]
    if scores.device.type == "cpu" and not torch.compiler.is_compiling():
        # numpy: its int64 bit operations are vectorised (torch's are several times slower on CPU) and its
        # sort is about 2x faster than torch.sort, which also builds an index tensor.
        key = scores.detach().float().numpy().astype(np.float64)
        # NaN would break the bit trick (garbage classes); the loss is NaN then anyway (nan_if_nonfinite).
        np.nan_to_num(key, copy=False, nan=0.0)
        np.clip(key, -_F32_MAX, _F32_MAX, out=key)  # +-inf | bits would be NaN
        key += 0.0  # -0.0 -> +0.0, so equal scores share their high bits
        bits = key.view(np.int64)
        bits |= low_mask - np.arange(c, dtype=np.int64)
        sorted_bits = _sort_rows_numpy(key).view(np.int64)
        cls = sorted_bits & low_mask
        cls ^= low_mask
        return torch.from_numpy(cls), torch.from_numpy(sorted_bits)
    key = scores.detach().float().to(torch.float64).nan_to_num_(0.0).clamp_(-_F32_MAX, _F32_MAX).add_(0.0)
    low = low_mask - torch.arange(c, device=scores.device, dtype=torch.int64).view(1, c)
    sorted_bits = torch.sort((key.view(torch.int64) | low).view(torch.float64), dim=1).values.view(
        torch.int64
    )
    return (sorted_bits & low_mask).bitwise_xor_(low_mask), sorted_bits


def zipf_rank_weights(scores: Tensor, *, power: float = 1.0, ties: str = "first") -> Tensor:
    """Zipf weights ``1 / r**power`` where r is each class's 1-based rank in descending order of ``scores``.

    ``scores`` ``(N, C)``, no gradient. ``ties="first"``: positions in a descending sort; exact ties are
    ordered deterministically by class index (lower index first among scores >= 0, higher index first among
    negative scores; ties only arise from underflow or equal logits); ``ties="min"``:
    ``r = 1 + #{j: scores_j > scores_i}`` (scipy ``rankdata(method="min")``). Ranks are taken on the scores
    rounded to float32. Returns ``(N, C)`` weights (float64 for float64 scores, else float32), not normalised.
    """
    n, c = scores.shape
    bits = max(1, (c - 1).bit_length())
    if bits > 29:
        raise ValueError(f"too many classes for the rank keys: C={c} (at most 2**29)")
    low_mask = (1 << bits) - 1
    cls, sorted_bits = _sorted_keys(scores, low_mask)  # (N, C) each, ascending score order
    wdtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    pos = torch.arange(c, device=scores.device, dtype=wdtype)
    if ties == "first":
        rank = (c - pos).expand(n, c)  # ascending position p -> descending rank C - p
    elif ties == "min":
        values = (sorted_bits & ~low_mask).view(torch.float64)
        last = torch.ones(n, c, dtype=torch.bool, device=scores.device)
        last[:, :-1] = values[:, 1:] != values[:, :-1]
        # Position of the last member of each tie group = reverse running minimum of the group ends.
        ends = torch.where(last, pos.expand(n, c), float(c))
        group_end = ends.flip(1).cummin(dim=1).values.flip(1)
        rank = c - group_end
    else:
        raise ValueError(f"ties must be 'first' or 'min', got {ties!r}")
    weights = rank.pow(-power) if power != 1.0 else rank.reciprocal()
    return torch.empty(n, c, device=scores.device, dtype=wdtype).scatter_(1, cls, weights)
