"""The ``torch.utils.data.DataLoader`` path, for datasets too large to hold in memory.

``FolderDataset`` decodes one image per ``__getitem__`` (in DataLoader worker processes) from a
``[top/]<split>/<class>/<image>`` folder. ``TorchLoader`` then applies the very same batch augmentation
as :class:`~unikd.data.loader.InMemoryLoader` on the device, with the same order, sharding and state:
a sample's view is the same pure function of (seed, epoch, i) on both paths. Mixup/cutmix partners are
fetched by the workers along with the batch. With the ImageNet geometry (``crop="rrc"``) the workers also
cut each view (RandomResizedCrop + flip, or Resize + CenterCrop for evaluation) from the image at its own
size, so the folder may hold images of any size; the rest of the augmentation runs on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from unikd.data.augment import AugmentConfig, flip_of, sample_params, signature
from unikd.data.dataset import ArrayDataset, check_split, parse_resize
from unikd.data.imagefolder import decode_image, index_layout
from unikd.data.loader import Batch, PlannedLoader
from unikd.data.resample import center_views, rrc_params, rrc_views

# Without a pass over the data the lazy dataset cannot compute statistics; ImageNet's are the usual choice.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FolderDataset(Dataset):
    """Lazily decoded image folder; items are (uint8 (C, H, W) tensor, label, index).

    ``resize`` (int or (H, W)) is needed when the images do not all have one size. ``mean``/``std``
    default to the ImageNet statistics (pass your own for other data).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        resize: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        check_split(split)
        if split == "val":
            raise ValueError(
                "FolderDataset has splits 'train' and 'test' (a 'val' folder serves as test); "
                "for a held-out part of train use create_dataset(..., val_split=...)"
            )
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(
                f"FolderDataset root {self.root} is not a folder; extract the archive first (the "
                "DataLoader path needs random access) or use the in-memory 'imagefolder' dataset"
            )
        paths = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        self.classes, layout = index_layout(paths, str(self.root))
        self.samples = layout["test" if split == "test" else "train"]
        self.size = parse_resize(resize)
        self.mean, self.std = tuple(mean), tuple(std)
        self.split = split
        self.name = "folder"
        self.labels = torch.tensor([lab for _, lab in self.samples], dtype=torch.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        rel, label = self.samples[i]
        path = self.root / rel
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {path} ({err}); restore or delete it") from err
        arr = decode_image(data, str(path), self.size)
        img = torch.from_numpy(np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)).permute(
            2, 0, 1
        )
        if img.shape[0] == 1 and len(self.mean) == 3:
            img = img.expand(3, -1, -1)
        return img.contiguous(), label, i


def _collate(items: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shapes = {tuple(x.shape) for x, _, _ in items}
    if len(shapes) > 1:
        raise ValueError(
            f"images in one batch have different sizes {sorted(shapes)}; pass resize=(H, W) "
            "(config: data.image_size) so that every image has one size"
        )
    return (
        torch.stack([x for x, _, _ in items]),
        torch.tensor([y for _, y, _ in items]),
        torch.tensor([i for _, _, i in items]),
    )


class _Indexed(Dataset):
    """An ArrayDataset whose items carry their index, like FolderDataset's."""

    def __init__(self, ds: ArrayDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        x, y = self.ds[i]
        return x, y, i


class _Views(Dataset):
    """Items ``(i, epoch)`` -> (uint8 view (C, S, S), label, i): the geometry of the ImageNet protocol cut in
    the worker from the full-size image (training: RandomResizedCrop + flip; eval: Resize + CenterCrop)."""

    def __init__(
        self, source: Dataset, cfg: AugmentConfig, seed: int, train: bool, eval_crop: int | None,
        eval_resize: int | None,
    ) -> None:
        self.source, self.cfg, self.seed, self.train = source, cfg, seed, train
        self.eval_crop, self.eval_resize = eval_crop, eval_resize

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        i, epoch = key
        img, label, _ = self.source[i]
        if not self.train:
            return center_views([img], self.eval_resize, self.eval_crop)[0], label, i  # type: ignore[arg-type]
        idx = torch.tensor([i], dtype=torch.int64)
        c = self.cfg
        box = rrc_params(self.seed, epoch, idx, img.shape[-2], img.shape[-1], c.crop_scale, c.crop_ratio)
        return rrc_views([img], box, flip_of(c, self.seed, epoch, idx), c.crop_size)[0], label, i  # type: ignore[arg-type]


class TorchLoader(PlannedLoader):
    """Same interface and semantics as :class:`InMemoryLoader`, decoding with ``num_workers`` DataLoader
    workers; the other options are those of :class:`~unikd.data.loader.PlannedLoader`."""

    def __init__(
        self, dataset: FolderDataset | ArrayDataset, batch_size: int, *, num_workers: int = 2, **options: Any
    ) -> None:
        super().__init__(dataset, batch_size, **options)
        self.num_workers = num_workers

    def _fetch_lists(self, epoch: int, batches: list[torch.Tensor]) -> list[list[int]]:
        """Per batch, the sorted unique dataset indices to decode: the rows plus their mixing partners."""
        out = []
        for rows in batches:
            need = rows
            if self.train and self.cfg.mixing and len(rows):
                prm = sample_params(self.cfg, self.plan.seed, epoch, rows, len(self.dataset), 1, 1)
                need = torch.cat([rows, prm["partner"]])
            out.append(torch.unique(need).tolist())
        return out

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.plan.epoch
        # The batch list is fixed up front because the workers prefetch; the plan's position then advances
        # only as batches are handed out, so state_dict() stays exact.
        batches = self.plan.remaining()
        source = _Indexed(self.dataset) if isinstance(self.dataset, ArrayDataset) else self.dataset
        fetch: list[list[Any]] = self._fetch_lists(epoch, batches)  # type: ignore[assignment]
        # The ImageNet geometry is cut in the workers (from full-size images); items then carry the epoch.
        in_worker = self.cfg.crop == "rrc" if self.train else self.eval_crop is not None
        if in_worker:
            source = _Views(source, self.cfg, self.plan.seed, self.train, self.eval_crop, self.eval_resize)
            fetch = [[(i, epoch) for i in items] for items in fetch]
        loader = DataLoader(
            source,
            batch_sampler=fetch,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for rows, (x, y, got) in zip(batches, loader):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

            def lookup(t: torch.Tensor, got: torch.Tensor = got) -> torch.Tensor:
                return torch.searchsorted(got, t)

            if self.train:
                imgs, target = self.augmenter.train_batch(
                    x, y, rows, self.plan.seed, epoch, num_samples=len(self.dataset), rows=lookup,
                    precropped=in_worker,
                )
            else:
                pos = lookup(rows).to(self.device)
                imgs, target = self.augmenter.normalize(x[pos]), y[pos]
            self.plan.position += 1
            yield Batch(imgs, target, rows.to(self.device))
        if self.plan.position >= len(self.plan):
            self.plan.epoch, self.plan.position = epoch + 1, 0

    def augment_signature(self) -> dict[str, Any]:
        sig = signature(self.cfg, self.plan.seed, self.dataset.mean, self.dataset.std)
        ident = (
            self.dataset.content_hash if isinstance(self.dataset, ArrayDataset) else str(self.dataset.root)
        )
        sig.update(
            train=self.train, eval_crop=self.eval_crop, eval_resize=self.eval_resize, dataset=ident,
            num_samples=len(self.dataset),
        )
        return sig
