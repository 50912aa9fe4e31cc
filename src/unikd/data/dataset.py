"""``ArrayDataset`` (uint8 images + int64 labels in memory) and the split / subset / statistics helpers
shared by every dataset reader."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unikd.data import hashing

SPLITS = ("train", "val", "test")


class ArrayDataset:
    """A whole image classification split in memory.

    Attributes: ``images`` uint8 (N, C, H, W) CPU tensor, ``labels`` int64 (N,), ``classes`` (list of
    str, label i is ``classes[i]``), ``num_classes``, ``mean`` / ``std`` (per channel, 0-1 scale),
    ``name``, ``split`` and ``content_hash`` (sha256 hex of the pixels, labels and class names, so it
    identifies the source data together with any subset / resize options; computed on first use).
    ``dropped_classes`` / ``dropped_samples``: the classes removed by :func:`unikd.data.drop_classes` and how
    many samples went with them (``()`` / 0 otherwise). ``transfer_source``: where the images of a transfer
    set (``data.transfer``, :mod:`unikd.data.transfer`) came from; None for a dataset's own split.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        name: str = "",
        split: str = "",
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(
                f"mean/std need one value per channel ({images.shape[1]}), got {len(mean)}/{len(std)}"
            )
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.classes = list(classes)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.name = name
        self.split = split
        self._hash: str | None = None
        self.dropped_classes: tuple[int, ...] = ()
        self.dropped_samples = 0
        self.transfer_source: dict | None = None  # set by unikd.data.transfer for an unlabeled transfer set
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes)}), got [{int(self.labels.min())}, "
                f"{int(self.labels.max())}]"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            h = hashlib.sha256()
            h.update(json.dumps({"shape": list(self.images.shape), "classes": self.classes}).encode())
            h.update(memoryview(self.images.numpy()).cast("B"))
            h.update(memoryview(self.labels.numpy()).cast("B"))
            self._hash = h.hexdigest()
        return self._hash

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape=({c}, {h}, {w}), classes={self.num_classes})"
        )


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def select_indices(
    labels: np.ndarray,
    num_classes: int,
    split: str,
    *,
    val_split: int = 0,
    samples_per_class: int | None = None,
    seed: int = 0,
    split_seed: int | None = None,
) -> np.ndarray | None:
    """Indices (ascending) of the requested part of a train or test split, or None for "all of it".

    ``labels`` are the labels of the *source* split (the train split for ``split`` train/val). Within each
    class the samples are ranked by a hash seeded with ``split_seed`` (default: ``seed``); the first
    ``val_split`` go to val, the rest to train; ``samples_per_class`` then keeps at most that many of the
    result, ranked by a hash seeded with ``seed``. A fixed ``split_seed`` therefore holds out the same
    validation images for every run while each ``seed`` still draws its own training subset; with
    ``split_seed=None`` (or equal to ``seed``) both use one ranking.
    """
    if val_split < 0:
        raise ValueError(f"val_split must be >= 0 (a count per class), got {val_split}")
    if samples_per_class is not None and samples_per_class <= 0:
        raise ValueError(f"samples_per_class must be a positive count or None, got {samples_per_class}")
    if split == "val" and val_split == 0:
        raise ValueError(
            "split='val' needs val_split > 0 (the count per class held out from train); "
            "set val_split=... or use split='test'"
        )
    if (split == "test" or val_split == 0) and samples_per_class is None:
        return None
    positions = torch.arange(len(labels))
    rank = hashing.hash_u32(seed, 0, hashing.SUBSET, positions).numpy()
    split_rank = rank
    if split_seed is not None and split_seed != seed:
        split_rank = hashing.hash_u32(split_seed, 0, hashing.SUBSET, positions).numpy()
    keep: list[np.ndarray] = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(split_rank[members], kind="stable")]
        if split != "test" and val_split:
            if val_split >= len(members):
                raise ValueError(
                    f"val_split={val_split} leaves no training samples for class {c} "
                    f"({len(members)} samples); lower val_split"
                )
            members = members[:val_split] if split == "val" else members[val_split:]
        if samples_per_class is not None:
            if split_rank is not rank:
                members = members[np.argsort(rank[members], kind="stable")]
            members = members[:samples_per_class]
        keep.append(members)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def channel_stats(
    images: torch.Tensor | np.ndarray, chunk: int = 8192
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0-1 scale) of uint8 (N, C, H, W) images, in float64, chunked to keep
    memory flat."""
    x = torch.as_tensor(images)
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(torch.float64).div_(255.0)
        s += part.sum(dim=(0, 2, 3))
        s2 += part.square().sum(dim=(0, 2, 3))
    count = max(1, x.shape[0] * x.shape[2] * x.shape[3])
    mean = s / count
    std = (s2 / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def parse_resize(resize: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``resize`` as (height, width): an int means a square size."""
    if resize is None:
        return None
    size = (
        (int(resize), int(resize)) if isinstance(resize, (int, np.integer)) else tuple(int(v) for v in resize)
    )
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"resize must be a positive int or (height, width), got {resize!r}")
    return size  # type: ignore[return-value]


def resize_images(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 (N, C, H, W) images (in chunks), rounded back to uint8."""
    if size is None or tuple(images.shape[2:]) == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    for start in range(0, images.shape[0], 4096):
        part = images[start : start + 4096].to(torch.float32)
        part = F.interpolate(part, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[start : start + 4096] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) with C in 1/3/4 -> (N, C, H, W); (N, C, H, W) kept."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3, 4):
            return x
        if x.shape[3] in (1, 3, 4):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    raise ValueError(f"{what} must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), got {x.shape}")


def finish(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    *,
    split: str,
    name: str,
    mean: Sequence[float],
    std: Sequence[float],
    val_split: int = 0,
    samples_per_class: int | None = None,
    seed: int = 0,
    split_seed: int | None = None,
    resize: tuple[int, int] | None = None,
) -> ArrayDataset:
    """Apply val / subset selection and the resize to one source split and wrap it as an ArrayDataset."""
    labels_np = np.asarray(labels).astype(np.int64)
    idx = select_indices(
        labels_np,
        len(classes),
        split,
        val_split=val_split,
        samples_per_class=samples_per_class,
        seed=seed,
        split_seed=split_seed,
    )
    img = torch.as_tensor(images)
    lab = torch.from_numpy(labels_np)
    if idx is not None:
        t = torch.from_numpy(idx)
        img, lab = img[t], lab[t]
    img = resize_images(img, resize)
    return ArrayDataset(img, lab, classes, mean, std, name=name, split=split)
