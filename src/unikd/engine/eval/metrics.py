"""Classification metrics that can be summed across batches and processes.

top-1 / top-5 accuracy (percent), mean negative log-likelihood and the expected calibration error
(ECE, Guo et al. 2017, "On Calibration of Modern Neural Networks") with equal-width confidence bins,
reported as a fraction in [0, 1]. Every metric is a ratio of sums, so a meter keeps the sums in one
float64 tensor that ``torch.distributed.all_reduce`` can add up across ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# Layout of the state vector: 4 scalars, three blocks of n_bins, then (per_class) two blocks of num_classes.
_COUNT, _TOP1, _TOPK, _NLL = 0, 1, 2, 3
_HEAD = 4


class ClassificationMeter:
    """Accumulate top-1, top-5, NLL and ECE over batches.

    Soft (mixup/cutmix) targets are scored against their argmax class. With fewer than 5 classes,
    "top-5" is top-C (always 100%).

    Args:
        num_classes: number of classes C; logits must have shape ``(N, C)``.
        n_bins: number of equal-width confidence bins on ``(0, 1]`` for the ECE.
        per_class: also count samples and top-1 hits per target class, for :meth:`class_top1`.
    """

    def __init__(self, num_classes: int, n_bins: int = 15, *, per_class: bool = False) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if int(n_bins) < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.num_classes = int(num_classes)
        self.n_bins = int(n_bins)
        self.per_class = bool(per_class)
        extra = 2 * self.num_classes if self.per_class else 0
        self._sums = torch.zeros(_HEAD + 3 * self.n_bins + extra, dtype=torch.float64)

    def reset(self) -> None:
        self._sums.zero_()

    def _hard_target(self, logits: Tensor, target: Tensor) -> Tensor:
        n, c = logits.shape
        if target.ndim == 2 and target.is_floating_point():
            if target.shape != logits.shape:
                raise ValueError(f"soft target has shape {tuple(target.shape)}, expected (N, C) = {(n, c)}")
            return target.argmax(dim=1)
        if target.ndim != 1 or target.shape[0] != n:
            raise ValueError(
                f"target must be class indices of shape (N,) = ({n},) or soft labels (N, C); "
                f"got shape {tuple(target.shape)}"
            )
        if target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"class-index target must be an integer tensor, got {target.dtype}")
        if n and (int(target.min()) < 0 or int(target.max()) >= c):
            raise ValueError(f"target holds class indices outside [0, {c - 1}] (min {int(target.min())}, "
                             f"max {int(target.max())}); do the model's num_classes and the data agree?")
        return target.long()

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch: ``logits`` ``(N, C)``, ``target`` int ``(N,)`` or soft ``(N, C)``."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have shape (N, {self.num_classes}), got {tuple(logits.shape)}; "
                "does the model's num_classes match the meter's?"
            )
        hard = self._hard_target(logits, target).to(logits.device)
        if logits.shape[0] == 0:
            return
        logp = torch.log_softmax(logits.detach().double(), dim=1)
        nll = -logp.gather(1, hard[:, None]).squeeze(1)
        conf, pred = logp.exp().max(dim=1)
        correct = (pred == hard).double()
        k = min(5, self.num_classes)
        topk = logits.detach().topk(k, dim=1).indices
        in_topk = (topk == hard[:, None]).any(dim=1).double()
        # Bin b holds confidences in (b/n, (b+1)/n]; confidence 0 cannot happen after softmax.
        bins = (torch.ceil(conf * self.n_bins).long() - 1).clamp_(0, self.n_bins - 1)
        nb = self.n_bins
        s = torch.zeros_like(self._sums, device=logits.device)
        s[_COUNT] = logits.shape[0]
        s[_TOP1] = correct.sum()
        s[_TOPK] = in_topk.sum()
        s[_NLL] = nll.sum()
        s[_HEAD : _HEAD + nb] = torch.bincount(bins, minlength=nb).double()
        s[_HEAD + nb : _HEAD + 2 * nb] = torch.bincount(bins, weights=conf, minlength=nb)
        s[_HEAD + 2 * nb : _HEAD + 3 * nb] = torch.bincount(bins, weights=correct, minlength=nb)
        if self.per_class:
            c, start = self.num_classes, _HEAD + 3 * nb
            s[start : start + c] = torch.bincount(hard, minlength=c).double()
            s[start + c :] = torch.bincount(hard, weights=correct, minlength=c)
        self._sums += s.cpu()

    def state(self) -> Tensor:
        """A copy of the float64 sum vector (``all_reduce`` it with SUM, then ``load_state``)."""
        return self._sums.clone()

    def load_state(self, t: Tensor) -> None:
        """Replace the sums (e.g. with the all-reduced vector)."""
        if t.shape != self._sums.shape:
            raise ValueError(f"meter state must have shape {tuple(self._sums.shape)}, got {tuple(t.shape)}")
        self._sums = t.detach().to("cpu", torch.float64).clone()

    @property
    def count(self) -> int:
        return int(self._sums[_COUNT])

    def compute(self) -> dict[str, float]:
        """``{"top1", "top5"}`` in percent, ``"nll"`` (mean), ``"ece"`` (fraction), ``"count"``."""
        s = self._sums
        n = float(s[_COUNT])
        if n == 0:
            raise ValueError("ClassificationMeter.compute() called before any sample was added")
        nb = self.n_bins
        conf_sum = s[_HEAD + nb : _HEAD + 2 * nb]
        correct_sum = s[_HEAD + 2 * nb : _HEAD + 3 * nb]
        # sum_b (n_b / N) * |acc_b - conf_b| == sum_b |correct_b - conf_b| / N
        ece = float((correct_sum - conf_sum).abs().sum()) / n
        return {
            "top1": 100.0 * float(s[_TOP1]) / n,
            "top5": 100.0 * float(s[_TOPK]) / n,
            "nll": float(s[_NLL]) / n,
            "ece": ece,
            "count": int(n),
        }


    def class_top1(self, classes: Sequence[int]) -> tuple[float | None, int]:
        """(top-1 in percent over the samples whose target is in ``classes``, their count); the top-1 is None
        when there are none. Needs ``per_class=True``."""
        if not self.per_class:
            raise ValueError("class_top1 needs a ClassificationMeter(..., per_class=True)")
        c, start = self.num_classes, _HEAD + 3 * self.n_bins
        idx = torch.as_tensor(list(classes), dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= c):
            raise ValueError(f"classes must lie in [0, {c - 1}], got {sorted(set(idx.tolist()))}")
        count = float(self._sums[start : start + c][idx].sum())
        hits = float(self._sums[start + c :][idx].sum())
        return (100.0 * hits / count if count else None), int(count)


def classification_metrics(logits: Tensor, target: Tensor, n_bins: int = 15) -> dict[str, float]:
    """Metrics of one set of predictions: ``top1``, ``top5`` (percent), ``nll``, ``ece``, ``count``."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    meter = ClassificationMeter(logits.shape[1], n_bins=n_bins)
    meter.update(logits, target)
    return meter.compute()
