"""Evaluation of a saved run: a unikd checkpoint on its own data config (or another split or dataset),
optionally with the bias-shift fix of some classes (``unikd eval``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unikd import integrity as _integrity
from unikd.engine.config.inputs import dataset_kwargs, model_kwargs
from unikd.engine.eval.evaluate import evaluate
from unikd.engine.run.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from unikd.engine.run.distributed import resolve_device
from unikd.engine.run.identity import check_own_folder


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
    ``bias_shift`` adds the bias-shift fix (:mod:`unikd.engine.eval.bias_shift`) of those classes
    (default: the
    run's ``data.drop_classes``): one constant ``b`` of ``bias_grid`` (default ``0:20:0.25``) added to their
    logits, chosen on the run's validation split, then ``split`` (default then: test; never val) scored with
    it: ``bias_shift``, ``bias_grid``, ``bias_val_top1`` / ``bias_val_top1_unshifted`` (validation top-1
    with ``b`` and with 0), ``biasfix_top1``, ``biasfix_top1_classes``, ``biasfix_top1_rest``.
    ``integrity="strict"`` refuses a checkpoint without a unikd checksum (a 0.1.0 one) instead of warning.
    Returns the metrics plus ``model``, ``data``, ``split``, ``checkpoint`` and ``network``.
    """
    from unikd.engine.run.weights import load_weights
    from unikd.models import create_model

    path = Path(checkpoint)
    ckpt = _read_checkpoint(path, integrity)
    data_cfg = _data_section(ckpt, data, data_root, samples_per_class)
    num_classes = int(ckpt["num_classes"])
    if bias_shift:
        classes, split = _bias_shift_split(path, data_cfg, num_classes, classes, split)
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


def _read_checkpoint(path: Path, integrity: str) -> dict[str, Any]:
    """The run checkpoint at ``path`` (its own folder's, a unikd one), under the integrity policy."""
    with _integrity.policy(integrity):
        ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict):
        check_own_folder(path, ckpt.get("run_id"), "checkpoint")
    if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT):
        raise ValueError(
            f"{str(path)!r} is not a unikd checkpoint (no model name / data config inside); evaluate a run's "
            "best.pt or last.pt"
        )
    return ckpt


def _data_section(ckpt: dict[str, Any], data: str | None, data_root: str | None,
                  samples_per_class: int | None) -> dict[str, Any]:
    """The run's ``data`` section with the caller's overrides."""
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
    return data_cfg


def _bias_shift_split(path: Path, data_cfg: dict[str, Any], num_classes: int, classes: Sequence[int] | None,
                      split: str | None) -> tuple[Sequence[int], str]:
    """The classes to shift (default: the run's dropped ones) and the split to score (default: test)."""
    if classes is None:
        from unikd.data.drop import resolve_drop_classes

        classes = resolve_drop_classes(data_cfg.get("drop_classes"), num_classes, data_cfg.get("drop_seed"))
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
    return classes, split or "test"


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
    from unikd.engine.eval.bias_shift import DEFAULT_GRID, ShiftedLogits, make_grid, search_on_loader

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
