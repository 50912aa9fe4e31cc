"""``create_dataset`` / ``create_loader``: the registry-backed entry points of :mod:`unikd.data`."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

from unikd.data.arrays import load_digits, load_npz
from unikd.data.cifar import load_cifar
from unikd.data.dataset import ArrayDataset
from unikd.data.imagefolder import load_imagefolder
from unikd.data.loader import InMemoryLoader, PlannedLoader
from unikd.data.torch_loader import FolderDataset, TorchLoader
from unikd.registry import Registry, closest

DATASETS: Registry[ArrayDataset] = Registry("dataset")
DATASETS.register("cifar10", functools.partial(load_cifar, "cifar10"))
DATASETS.register("cifar100", functools.partial(load_cifar, "cifar100"))
DATASETS.register("imagefolder", load_imagefolder)
DATASETS.register("npz", load_npz)
DATASETS.register("digits", load_digits)

OPTIONS = ("download", "cache_dir", "resize", "samples_per_class", "val_split", "seed", "split_seed")


def list_datasets() -> list[str]:
    return DATASETS.names()


def create_dataset(
    name: str, root: str | Path | None = None, split: str = "train", **kw: Any
) -> ArrayDataset:
    """Load split ``split`` ("train", "val" or "test") of dataset ``name`` into memory.

    Options (all keyword): ``samples_per_class`` (class-balanced subset), ``val_split`` (count per class
    held out from train; ``split="val"`` returns it), ``seed`` (for both), ``split_seed`` (seed of the
    validation hold-out alone, so every run can share one validation set), ``resize`` (int or (H, W)),
    ``cache_dir`` (imagefolder decode cache; default ``$UNIKD_CACHE`` or ``~/.cache/unikd``) and
    ``download`` (cifar10/cifar100 only).
    """
    factory = DATASETS.get(name)
    unknown = [k for k in kw if k not in OPTIONS]
    if unknown:
        hint = closest(unknown[0], OPTIONS)
        raise ValueError(
            f"create_dataset({name!r}): unknown option {unknown[0]!r}"
            f"{f' (did you mean {hint!r}?)' if hint else ''}; valid options: {', '.join(OPTIONS)}"
        )
    return factory(root=root, split=split, **kw)


def create_loader(
    dataset: ArrayDataset | FolderDataset | str | Path,
    batch_size: int,
    *,
    train: bool,
    loader: str = "memory",
    num_workers: int = 2,
    resize: int | tuple[int, int] | None = None,
    split: str = "train",
    **kw: Any,
) -> InMemoryLoader | TorchLoader:
    """A batch loader for ``dataset``: ``loader="memory"`` (InMemoryLoader, the default) or ``"torch"``
    (a DataLoader with ``num_workers`` decoding workers). A folder path as ``dataset`` builds a lazily
    decoding :class:`FolderDataset` (split ``split``) and uses the torch path. ``kw`` are the
    PlannedLoader options (seed, device, crop_padding, hflip, mixup_alpha, cutmix_alpha, mix_prob,
    drop_last, rank, world_size, shuffle).
    """
    if loader not in ("memory", "torch"):
        raise ValueError(f"loader must be 'memory' or 'torch', got {loader!r}")
    allowed = set(inspect.signature(PlannedLoader).parameters) - {"dataset", "batch_size", "train"}
    bad = sorted(set(kw) - allowed)
    if bad:
        raise ValueError(f"create_loader: unknown option(s) {bad}; valid: {', '.join(sorted(allowed))}")
    if isinstance(dataset, (str, Path)):
        dataset = FolderDataset(dataset, split, resize=resize)
        loader = "torch"
    if isinstance(dataset, FolderDataset) or loader == "torch":
        return TorchLoader(dataset, batch_size, train=train, num_workers=num_workers, **kw)
    return InMemoryLoader(dataset, batch_size, train=train, **kw)


__all__ = ["DATASETS", "create_dataset", "create_loader", "list_datasets"]
