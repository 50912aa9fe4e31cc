"""The bias-shift fix for classes a student never trained on (Hinton, Vinyals and Dean 2015, "Distilling the
Knowledge in a Neural Network", §3).

With the digit 3 omitted from the transfer set, the distilled MNIST net still got most test 3s right, and most
of its errors on them came from a learned bias for the 3 class that was much too low; raising that bias by a
constant fixed most of them. Here: one constant ``b`` is added to the logits of the dropped classes (the same
``b`` for each), chosen on the **validation** split by a grid search that maximises the overall validation
top-1, then applied unchanged to the test split. The test split is never looked at for the choice.

- Grid: :data:`DEFAULT_GRID`, ``b = 0, 0.25, 0.5, ..., 20`` (81 values; unikd's choice, not tuned on any
  result). ``b = 0`` is always in a grid (added when missing), so the chosen ``b`` can never lower the
  validation top-1. A ``b`` at the grid's upper end means the grid may be too short (the run's log says so);
  ``unikd eval --bias-shift --bias-grid`` searches another grid.
- Ties (several ``b`` with the same validation top-1): the smallest ``|b|`` wins, then the smaller ``b``; so
  ``b = 0`` is kept unless a shift is strictly better on validation.
- Predictions are taken exactly as :class:`~unikd.engine.eval.metrics.ClassificationMeter` takes them (float32
  logits plus ``b``, argmax of the float64 softmax), so the validation top-1 at ``b = 0`` is the run's own.

Pure functions (:func:`shift_logits`, :func:`grid_hits`, :func:`select_bias`, :func:`search_bias_shift`) and
two helpers for models: :class:`ShiftedLogits` (a model whose outputs carry the shift, for
:func:`~unikd.engine.eval.evaluate.evaluate`) and :func:`search_on_loader` (the validation pass, DDP-aware).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unikd.engine.run.distributed import DistInfo, all_reduce_sum

DEFAULT_GRID_TEXT = "0:20:0.25"


def parse_grid(text: str) -> tuple[float, ...]:
    """A grid from ``"START:STOP:STEP"`` (both ends included) or a comma list ``"0,1,2.5"``; sorted, without
    repeats, with ``0`` added when missing. Raises ``ValueError`` with the accepted forms."""
    how = "write START:STOP:STEP (e.g. 0:20:0.25) or a comma list of numbers (e.g. 0,1,2,4)"
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if not step > 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step))
            if start + n * step > stop + 1e-9 * max(1.0, abs(stop)):
                n -= 1
            if n > 100_000:
                raise ValueError
            values = [round(start + i * step, 10) for i in range(n + 1)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"bias grid {text!r} is not valid: {how}") from None
    return make_grid(values, where=f"bias grid {text!r}")


def make_grid(values: Iterable[float], *, where: str = "bias grid") -> tuple[float, ...]:
    """``values`` sorted, without repeats, with ``0.0`` added; every value finite."""
    out = {0.0}
    for v in values:
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: every value must be a finite number, got {v}")
        out.add(v + 0.0)  # -0.0 -> 0.0
    return tuple(sorted(out))


DEFAULT_GRID = parse_grid(DEFAULT_GRID_TEXT)


def _class_index(classes: Sequence[int], num_classes: int) -> Tensor:
    idx = sorted({int(c) for c in classes})
    if not idx or idx[0] < 0 or idx[-1] >= num_classes:
        raise ValueError(f"the shifted classes must be at least one class in 0..{num_classes - 1}, got "
                         f"{list(classes)}")
    return torch.as_tensor(idx, dtype=torch.long)


def shift_logits(logits: Tensor, classes: Sequence[int], bias: float) -> Tensor:
    """float32 copy of ``logits`` ``(N, C)`` with ``bias`` added to the columns ``classes``."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    out = logits.detach().float().clone()
    out[:, _class_index(classes, out.shape[1]).to(out.device)] += float(bias)
    return out


def _predict(logits: Tensor) -> Tensor:
    """Top-1 class as ClassificationMeter takes it (max of the float64 softmax)."""
    return torch.log_softmax(logits.double(), dim=1).exp().max(dim=1).indices


def _hard(target: Tensor) -> Tensor:
    return target.argmax(dim=1) if target.ndim == 2 else target.long()


def grid_hits(logits: Tensor, target: Tensor, classes: Sequence[int], grid: Sequence[float]) -> Tensor:
    """float64 ``(len(grid),)``: how many rows are top-1 correct with each ``b`` of ``grid`` added to the
    ``classes``' logits. Sums over batches (and ranks) give the hits of a whole split."""
    hard = _hard(target).to(logits.device)
    if hard.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape (N,) = ({logits.shape[0]},), got {tuple(target.shape)}")
    return torch.tensor(
        [float((_predict(shift_logits(logits, classes, b)) == hard).sum()) for b in grid], dtype=torch.float64
    )


def select_bias(hits: Sequence[float] | Tensor, grid: Sequence[float]) -> int:
    """Index into ``grid`` of the ``b`` with the most hits; ties go to the smallest ``|b|``, then the
    smaller ``b``."""
    values = [float(h) for h in (hits.tolist() if isinstance(hits, Tensor) else hits)]
    if len(values) != len(grid) or not values:
        raise ValueError(f"hits ({len(values)}) and grid ({len(grid)}) must have the same non-zero length")
    best = max(values)
    return min((i for i, h in enumerate(values) if h == best), key=lambda i: (abs(grid[i]), grid[i]))


@dataclass(frozen=True)
class BiasShift:
    """The ``bias`` chosen on a split, with the hits of every ``b`` of ``grid`` out of ``count`` samples."""

    bias: float
    grid: tuple[float, ...]
    hits: tuple[float, ...]
    count: int

    @property
    def top1(self) -> float:
        """Top-1 (percent) of the split with ``bias``."""
        return 100.0 * self.hits[self.grid.index(self.bias)] / self.count

    @property
    def top1_unshifted(self) -> float:
        """Top-1 (percent) of the split without a shift (``b = 0``)."""
        return 100.0 * self.hits[self.grid.index(0.0)] / self.count

    @property
    def at_edge(self) -> bool:
        """True when ``bias`` is the grid's largest value above 0 (a longer grid might do better)."""
        return self.bias > 0 and self.bias == self.grid[-1]


def _result(hits: Tensor, count: int, grid: tuple[float, ...]) -> BiasShift:
    if count <= 0:
        raise ValueError("the bias shift is chosen on a split without samples")
    i = select_bias(hits, grid)
    return BiasShift(bias=grid[i], grid=grid, hits=tuple(float(h) for h in hits.tolist()), count=int(count))


def search_bias_shift(logits: Tensor, target: Tensor, classes: Sequence[int],
                      grid: Sequence[float] = DEFAULT_GRID) -> BiasShift:
    """The ``b`` of ``grid`` (0 added) that maximises top-1 of ``logits`` ``(N, C)`` against ``target`` when
    added to the ``classes``' logits (the validation split's logits; never the test split's)."""
    g = make_grid(grid)
    return _result(grid_hits(logits, target, classes, g), int(logits.shape[0]), g)


class ShiftedLogits(nn.Module):
    """``model`` whose output logits (float32) carry ``bias`` on ``classes`` (evaluation only)."""

    def __init__(self, model: nn.Module, classes: Sequence[int], bias: float) -> None:
        super().__init__()
        self.model = model
        self.classes = sorted({int(c) for c in classes})
        self.bias = float(bias)

    def forward(self, x: Tensor) -> Tensor:
        return shift_logits(self.model(x), self.classes, self.bias)


@torch.no_grad()
def search_on_loader(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    classes: Sequence[int],
    grid: Sequence[float] = DEFAULT_GRID,
    precision: str = "fp32",
    device: torch.device | str | None = None,
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
) -> BiasShift:
    """:func:`search_bias_shift` over the batches of ``loader`` (the validation loader), the model in eval
    mode; under DDP every rank scores its shard and the hits are all-reduced, so every rank gets the same
    ``b``."""
    from unikd.engine.run.distributed import autocast_factory

    g = make_grid(grid)
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = autocast_factory(precision, device)
    state = torch.zeros(len(g) + 1, dtype=torch.float64)  # hits per b, then the count
    try:
        for batch in loader:
            images = batch.images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(images)
            state[:-1] += grid_hits(logits.float(), batch.target.to(device), classes, g).cpu()
            state[-1] += logits.shape[0]
    finally:
        model.train(was_training)
    if dist_info is not None and dist_info.distributed:
        state = state.to(dist_info.device)
        all_reduce_sum(state, dist_info)
        state = state.cpu()
    return _result(state[:-1], int(state[-1]), g)


__all__ = ["DEFAULT_GRID", "DEFAULT_GRID_TEXT", "BiasShift", "ShiftedLogits", "grid_hits", "make_grid",
           "parse_grid", "search_bias_shift", "search_on_loader", "select_bias", "shift_logits"]
