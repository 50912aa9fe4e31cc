"""Evaluation: top-1, top-5, NLL and ECE (15 bins) of a model on a loader, or of a saved checkpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unikd.engine.distributed import DistInfo, all_reduce_sum
from unikd.engine.metrics import ClassificationMeter


def autocast_factory(precision: str, device: torch.device) -> Callable[[], Any]:
    """A zero-argument context factory: autocast for bf16/fp16, a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


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


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    data_root: str | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    samples_per_class: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    network: str = "student",
    classes: Sequence[int] | None = None,
    integrity: str = "lenient",
    bias_shift: bool = False,
    bias_grid: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Evaluate a unikd checkpoint (``best.pt``/``last.pt``) on its own data config, or on ``data``.

    The checkpoint records the model name, class count, input channels and data config; ``data`` /
    ``data_root`` / ``split`` override them (``split`` defaults to the run's validation split).
    ``samples_per_class`` defaults to the run's own subset; 0 evaluates every image of the split.
    ``network`` picks a peer of online training (``peer1``, ...) instead of the student.
    ``classes`` (e.g. a run's dropped classes) adds ``top1_classes`` / ``count_classes`` over the samples of
    those classes and ``top1_rest`` / ``count_rest`` over the others (a top-1 is None without samples).
    ``bias_shift`` adds the bias-shift fix (:mod:`unikd.engine.bias_shift`) of those classes (default: the
    run's ``data.drop_classes``): one constant ``b`` of ``bias_grid`` (default ``0:20:0.25``) added to their
    logits, chosen on the run's validation split, then ``split`` (default then: test; never val) scored with
    it: ``bias_shift``, ``bias_grid``, ``bias_val_top1`` / ``bias_val_top1_unshifted`` (validation top-1
    with ``b`` and with 0), ``biasfix_top1``, ``biasfix_top1_classes``, ``biasfix_top1_rest``.
    ``integrity="strict"`` refuses a checkpoint without a unikd checksum (a 0.1.0 one) instead of warning.
    Returns the metrics plus ``model``, ``data``, ``split``, ``checkpoint`` and ``network``.
    """
    from unikd import integrity as _integrity
    from unikd.engine.checkpoint import load_checkpoint
    from unikd.engine.distributed import resolve_device
    from unikd.engine.run_identity import check_own_folder
    from unikd.engine.teacher import CHECKPOINT_FORMAT, load_weights
    from unikd.models import create_model

    path = Path(checkpoint)
    with _integrity.policy(integrity):
        ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict):
        check_own_folder(path, ckpt.get("run_id"), "checkpoint")
    if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT):
        raise ValueError(
            f"{str(path)!r} is not a unikd checkpoint (no model name / data config inside); evaluate a run's "
            "best.pt or last.pt"
        )
    data_cfg = dict(ckpt["data"])
    if data is not None and data != data_cfg["name"]:
        data_cfg.update(name=data, root=None)
    if data_root is not None:
        data_cfg["root"] = data_root
    if samples_per_class is not None:
        if samples_per_class < 0:
            raise ValueError(
                f"samples_per_class must be >= 0 (0 = every image of the split), got {samples_per_class}"
            )
        data_cfg["samples_per_class"] = samples_per_class or None  # 0: the whole split
    num_classes = int(ckpt["num_classes"])
    if bias_shift:
        if classes is None:
            from unikd.data.drop import resolve_drop_classes

            classes = resolve_drop_classes(data_cfg.get("drop_classes"), num_classes,
                                           data_cfg.get("drop_seed"))
            if not classes:
                raise ValueError(
                    f"{str(path)!r} is from a run that dropped no classes (data.drop_classes); name the "
                    "classes to shift with classes=[...] (--classes 3,5)"
                )
        if not data_cfg.get("val_split", 0) > 0:
            raise ValueError(
                "the bias shift is chosen on the run's validation split, and this run held none out "
                "(data.val_split=0)"
            )
        if split == "val":
            raise ValueError(
                "the bias shift is chosen on the validation split; score it on another split (test, the "
                "default, or train)"
            )
        split = split or "test"
    if split is None:
        split = "val" if data_cfg.get("val_split", 0) > 0 else "test"
    dev = resolve_device(device)
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError(f"precision=fp16 needs CUDA; on {dev.type} use bf16 or fp32")
    groups = _class_groups(classes, num_classes)
    loader = _split_loader(ckpt, data_cfg, split, batch_size, dev)
    model_name, weights = _network(ckpt, network, path)
    # the recorded model_args describe the student; peers are built from their names alone
    model_args = dict((ckpt.get("config") or {}).get("model_args") or {}) if network == "student" else {}
    model = create_model(
        model_name, num_classes=num_classes, **model_kwargs(ckpt.get("in_chans", 3)), **model_args
    )
    load_weights(model, weights, path=path, what="checkpoint")
    model.to(dev)
    metrics = evaluate(model, loader, num_classes=num_classes, precision=precision, device=dev, desc="eval",
                       class_groups=groups)
    if bias_shift:
        assert groups is not None
        metrics.update(
            _bias_fix(model, ckpt, data_cfg, groups, bias_grid, batch_size, dev, precision, loader)
        )
    return {
        **metrics,
        **({"classes": groups["classes"]} if groups else {}),
        "model": model_name,
        "network": network,
        "data": data_cfg["name"],
        "split": split,
        "checkpoint": str(path),
        "epoch": ckpt.get("epoch"),
        "n_bins": 15,
    }


def _split_loader(ckpt: dict[str, Any], data_cfg: dict[str, Any], split: str, batch_size: int | None,
                  dev: torch.device) -> Any:
    """An evaluation loader over ``split`` of ``data_cfg``, normalised with the run's training statistics."""
    from unikd.data import InMemoryLoader, create_dataset
    from unikd.data.views import view_options

    dataset = create_dataset(data_cfg["name"], **dataset_kwargs(data_cfg, split=split, seed=ckpt["seed"]))
    num_classes = int(ckpt["num_classes"])
    if dataset.num_classes != num_classes:
        raise ValueError(
            f"the checkpoint's model has {num_classes} classes but dataset {data_cfg['name']!r} has "
            f"{dataset.num_classes}; evaluate on the data it was trained for"
        )
    # Normalise exactly as in training (the statistics of the training data, recorded in the checkpoint).
    if len(data_cfg.get("mean", ())) == len(dataset.mean):
        dataset.mean, dataset.std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    return InMemoryLoader(
        dataset,
        batch_size or int(data_cfg.get("eval_batch_size", 512)),
        train=False,
        device=dev,
        **view_options(data_cfg),  # the run's eval geometry (Resize + CenterCrop under crop=rrc)
    )


def _bias_fix(model: nn.Module, ckpt: dict[str, Any], data_cfg: dict[str, Any], groups: dict[str, list[int]],
              grid: Sequence[float] | None, batch_size: int | None, dev: torch.device, precision: str,
              loader: Any) -> dict[str, Any]:
    """``b`` chosen on the validation split, then ``loader``'s split scored with it (evaluate_checkpoint)."""
    from unikd.engine.bias_shift import DEFAULT_GRID, ShiftedLogits, make_grid, search_on_loader

    num_classes = int(ckpt["num_classes"])
    val = _split_loader(ckpt, data_cfg, "val", batch_size, dev)
    found = search_on_loader(model, val, classes=groups["classes"], grid=make_grid(grid or DEFAULT_GRID),
                             precision=precision, device=dev)
    shifted = evaluate(ShiftedLogits(model, groups["classes"], found.bias), loader, num_classes=num_classes,
                       precision=precision, device=dev, class_groups=groups)
    return {
        "bias_shift": found.bias,
        "bias_grid": list(found.grid),
        "bias_val_top1": found.top1,
        "bias_val_top1_unshifted": found.top1_unshifted,
        "bias_val_count": found.count,
        "biasfix_top1": shifted["top1"],
        "biasfix_top1_classes": shifted["top1_classes"],
        "biasfix_top1_rest": shifted["top1_rest"],
    }


def _class_groups(classes: Sequence[int] | None, num_classes: int) -> dict[str, list[int]] | None:
    """``{"classes": sorted classes, "rest": the others}``, checked against the model's class count."""
    if classes is None:
        return None
    chosen = sorted({int(c) for c in classes})
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if not chosen or bad:
        raise ValueError(
            f"classes must name at least one class in 0..{num_classes - 1} (the checkpoint's model has "
            f"{num_classes} classes), got {list(classes)}"
        )
    return {"classes": chosen, "rest": [c for c in range(num_classes) if c not in chosen]}


def _network(ckpt: dict[str, Any], network: str, path: Path) -> tuple[str, dict[str, Any]]:
    """The model name and evaluated weights of the student or of a peer of online training."""
    if network == "student":
        return ckpt["model_name"], ckpt["model"]
    peers = {p["name"]: p for p in (ckpt.get("online") or {}).get("peers", [])}
    if network not in peers:
        have = ", ".join(["student", *peers])
        raise ValueError(f"{str(path)!r} has no network {network!r}; it holds: {have}")
    return peers[network]["model_name"], peers[network]["model"]


def dataset_kwargs(data_cfg: dict[str, Any], *, split: str, seed: int) -> dict[str, Any]:
    """``create_dataset`` keyword arguments from a ``data`` config section."""
    per_class = data_cfg.get("samples_per_class")
    if split == "test" and not data_cfg.get("subset_test", True):
        per_class = None
    return {
        "root": data_cfg.get("root"),
        "split": split,
        "samples_per_class": per_class,
        "val_split": data_cfg.get("val_split", 0),
        "seed": seed,
        "split_seed": data_cfg.get("split_seed"),
        "cache_dir": data_cfg.get("cache_dir"),
        "download": data_cfg.get("download", False),
        "resize": data_cfg.get("image_size"),
    }


def model_kwargs(in_chans: int) -> dict[str, Any]:
    """Extra ``create_model`` arguments: zoo models default to 3 input channels."""
    return {} if in_chans == 3 else {"in_chans": in_chans}
