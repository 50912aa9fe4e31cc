"""Unlabeled transfer sets (``data.transfer``): the student trains on images of another dataset.

Distillation with webly collected or otherwise foreign images (e.g. KD³, Tang et al., ICCV 2023) trains the
student on images the teacher never saw, with the teacher's outputs as the only supervision, while the
student is still validated and tested on the teacher's task (``data.name``). A transfer set is such a
training split: any dataset the harness reads, its labels ignored, resized to the task's training image
size (the teacher's input size) and normalised with the task's training statistics (what the teacher was
trained with), so the teacher sees inputs in the format it knows.

The result is an :class:`~unikd.data.dataset.ArrayDataset` with the task's class list and placeholder labels
(all 0: nothing may read them; the engine uses the teacher's predicted class as the target) and a
``transfer_source`` record naming where its images came from (preflight table, teacher-cache identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from unikd.data import hashing
from unikd.data.dataset import ArrayDataset
from unikd.registry import closest

# Hash stream of the ``limit`` draw (no augmentation or subset stream uses it).
LIMIT_STREAM = 401
KEYS = ("name", "root", "split", "samples_per_class", "limit", "seed", "channels", "download")
# ITU-R BT.601 luma weights: RGB -> one grey channel
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class TransferSpec:
    """A parsed ``data.transfer`` mapping (see :func:`parse_transfer`)."""

    name: str
    root: str | None = None
    split: str = "train"
    samples_per_class: int | None = None
    limit: int | None = None
    seed: int | None = None
    channels: int | None = None
    download: bool = False


def _count(value: object, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"data.transfer.{key} must be a positive integer or null, got {value!r}")
    return value


def parse_transfer(raw: Mapping[str, Any] | None) -> TransferSpec | None:
    """Validate ``data.transfer`` (None: no transfer set). Unknown keys fail with the closest valid one."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"data.transfer must be a mapping such as {{name: cifar100, root: PATH}}, got "
                         f"{raw!r}")
    for key in raw:
        if key not in KEYS:
            hint = closest(str(key), KEYS)
            did_you_mean = f" Did you mean 'data.transfer.{hint}'?" if hint else ""
            raise ValueError(f"unknown config key 'data.transfer.{key}'.{did_you_mean} Valid keys: "
                             f"{', '.join(KEYS)}")
    from unikd.data.factory import list_datasets

    name = raw.get("name")
    if name not in list_datasets():
        raise ValueError(f"data.transfer.name must name a dataset ({', '.join(list_datasets())}), got "
                         f"{name!r}")
    split = raw.get("split", "train")
    if split not in ("train", "test"):
        raise ValueError(f"data.transfer.split must be train or test, got {split!r}")
    channels = raw.get("channels")
    if channels not in (None, 1, 3):
        raise ValueError("data.transfer.channels converts images to 1 (grey) or 3 (RGB) channels, got "
                         f"{channels!r}")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"data.transfer.seed must be an integer or null (the run's seed), got {seed!r}")
    root, download = raw.get("root"), raw.get("download", False)
    if root is not None and not isinstance(root, str):
        raise ValueError(f"data.transfer.root must be a path, got {root!r}")
    if not isinstance(download, bool):
        raise ValueError(f"data.transfer.download must be true or false, got {download!r}")
    return TransferSpec(name, root, split, _count(raw.get("samples_per_class"), "samples_per_class"),
                        _count(raw.get("limit"), "limit"), seed, channels, download)


def _limit(images: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """At most ``limit`` images, drawn by a hash of (seed, position); the source order is kept."""
    if limit is None or limit >= len(images):
        return images
    rank = hashing.hash_u32(seed, 0, LIMIT_STREAM, torch.arange(len(images)))
    keep = torch.argsort(rank * len(images) + torch.arange(len(images)))[:limit]  # ties broken by position
    return images[keep.sort().values]


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images as ``channels`` channels: grey -> RGB repeats the channel; RGB -> grey
    takes the BT.601 luma, rounded."""
    have = int(images.shape[1])
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        w = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"data.transfer.channels={channels}: cannot convert {have}-channel images")


def _check_channels(src: ArrayDataset, spec: TransferSpec, task: ArrayDataset) -> int:
    have, want = int(src.images.shape[1]), int(task.images.shape[1])
    target = spec.channels if spec.channels is not None else have
    if target != want:
        how = ("to repeat the grey channel" if want == 3 and have == 1 else
               "to convert to grey (BT.601 luma)" if want == 1 and have == 3 else "")
        fix = f"set data.transfer.channels={want} {how}" if how else "use a transfer set of that format"
        raise ValueError(
            f"data.transfer: the {spec.name} images have {have} channel(s) but the task's ({task.name}) have "
            f"{want}, which is what the teacher reads; {fix} (or pick a transfer set with {want}-channel "
            "images)"
        )
    return target


def build_transfer_set(spec: TransferSpec, task: ArrayDataset, *, seed: int, cache_dir: str | None = None,
                       hold_out: Mapping[str, Any] | None = None) -> ArrayDataset:
    """The transfer set of ``spec`` in the format of ``task`` (the task's training split).

    ``seed``: the run's seed (``spec.seed`` overrides it) for ``samples_per_class`` and ``limit``.
    ``hold_out``: ``{"val_split", "split_seed"}`` when the transfer set comes from the task's own training
    split, so that the task's validation images stay out of it. ``samples_per_class`` is drawn with the
    source's own labels (they select a balanced subset; training never sees them).
    """
    from unikd.data.factory import create_dataset

    seed = spec.seed if spec.seed is not None else seed
    size = tuple(int(s) for s in task.images.shape[2:])
    src = create_dataset(spec.name, root=spec.root, split=spec.split,
                         samples_per_class=spec.samples_per_class, seed=seed, resize=size,
                         cache_dir=cache_dir, download=spec.download, **(hold_out or {}))
    channels = _check_channels(src, spec, task)
    images = convert_channels(_limit(src.images, spec.limit, seed), channels)
    if len(images) == 0:
        raise ValueError(f"data.transfer ({spec.name}, split {spec.split}) holds no images")
    labels = torch.zeros(len(images), dtype=torch.int64)  # placeholders: the teacher's argmax is the target
    out = ArrayDataset(images, labels, task.classes, task.mean, task.std, name=f"transfer:{spec.name}",
                       split="train")
    out.transfer_source = {
        "name": spec.name, "root": spec.root, "split": spec.split, "images": len(images),
        "size": list(size), "source_channels": int(src.images.shape[1]), "channels": channels,
        "held_out_validation": hold_out is not None,
    }
    return out


def describe_transfer(dataset: Any, task_name: str) -> str | None:
    """One preflight line about a transfer set, or None when the run trains on the task's own split."""
    src = getattr(dataset, "transfer_source", None)
    if not src:
        return None
    where = f" {src['root']}" if src["root"] else ""
    size = "x".join(map(str, src["size"]))
    chans = (f", {src['source_channels']} -> {src['channels']} channels"
             if src["source_channels"] != src["channels"] else "")
    held = "; the task's validation images held out" if src["held_out_validation"] else ""
    return (f"student trains on {src['name']}{where} ({src['split']} split): {src['images']} images, labels "
            f"ignored, resized to {size}{chans}{held}; validation and test: {task_name}")


__all__ = ["TransferSpec", "build_transfer_set", "convert_channels", "describe_transfer", "parse_transfer"]
