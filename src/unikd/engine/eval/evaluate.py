"""Evaluation: top-1, top-5, NLL and ECE (15 bins) of a model on a loader, or of a saved checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from unikd.engine.eval.metrics import ClassificationMeter
from unikd.engine.run.distributed import DistInfo, all_reduce_sum, autocast_factory


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    num_classes: int,
    precision: str = "fp32",
    device: torch.device | str | None = None,
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
    n_bins: int = 15,
    desc: str | None = None,
    class_groups: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` over ``loader`` (batches with ``images`` and ``target``; e.g. ``InMemoryLoader``).

    Returns ``top1``/``top5`` in percent, ``nll`` (mean), ``ece`` (fraction, ``n_bins`` equal-width bins)
    and ``count``. With ``dist_info`` of a DDP run, each rank scores its shard and the sums are
    all-reduced, so every rank returns the metrics of the whole set. ``desc`` (e.g. ``"eval"``) shows a
    progress bar with that label on rank 0 when the ``unikd`` logger is at INFO (as under the CLI).
    ``class_groups`` (``{"dropped": [3, 5], "kept": [...]}``) adds ``top1_<name>`` (percent over the
    samples of those classes; None when there are none) and ``count_<name>`` for each group.
    """
    from unikd._progress import progress, progress_enabled

    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = autocast_factory(precision, device)
    meter = ClassificationMeter(num_classes, n_bins=n_bins, per_class=bool(class_groups))
    is_main = dist_info is None or dist_info.is_main
    show = desc is not None and is_main and progress_enabled()
    try:
        for batch in progress(loader, desc=desc or "", enabled=show):
            images = batch.images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(images)
            meter.update(logits.float(), batch.target.to(device))
    finally:
        model.train(was_training)
    if dist_info is not None and dist_info.distributed:
        state = meter.state().to(dist_info.device)
        all_reduce_sum(state, dist_info)
        meter.load_state(state.cpu())
    out: dict[str, Any] = {k: float(v) for k, v in meter.compute().items()}
    for name, classes in (class_groups or {}).items():
        out[f"top1_{name}"], out[f"count_{name}"] = meter.class_top1(classes)
    return out
