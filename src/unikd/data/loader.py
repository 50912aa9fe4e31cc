"""``InMemoryLoader``: batches straight from a uint8 tensor held on the training device, with the whole
batch augmented at once (see :mod:`unikd.data.augment`).

Ordering and sharding (shared with the DataLoader path in :mod:`unikd.data.torch_loader`):
the order of epoch e is a hashed permutation of (seed, e); global batch s holds positions
[s * batch_size, (s + 1) * batch_size) of that order, and rank r takes rows
[r * b, (r + 1) * b) of it with b = batch_size // world_size. A 2-rank run therefore sees, per step,
exactly the rows a 1-rank run sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from unikd.data import hashing
from unikd.data.augment import AugmentConfig, BatchAugmenter, signature
from unikd.data.dataset import ArrayDataset


class Batch(NamedTuple):
    """``images`` float32 (B, C, H, W) normalised; ``target`` int64 (B,) or float32 (B, C) soft labels
    (mixup/cutmix); ``index`` int64 (B,) dataset indices (for per-sample caches)."""

    images: torch.Tensor
    target: torch.Tensor
    index: torch.Tensor


class BatchPlan:
    """Epoch order, global batches, this rank's rows and the resumable (epoch, position) state."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        train: bool,
        seed: int,
        drop_last: bool | None,
        rank: int,
        world_size: int,
        shuffle: bool | None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size={batch_size} (the global batch) must be divisible by world_size="
                f"{world_size}; use a multiple such as {world_size * max(1, batch_size // world_size)}"
            )
        if num_samples <= 0:
            raise ValueError("the dataset is empty; check root, split and samples_per_class")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.train = train
        self.seed = int(seed)
        self.drop_last = train if drop_last is None else bool(drop_last)
        self.shuffle = train if shuffle is None else bool(shuffle)
        self.rank = rank
        self.world_size = world_size
        self.per_rank = batch_size // world_size
        if self.drop_last and num_samples < batch_size:
            raise ValueError(
                f"drop_last=True with batch_size={batch_size} > {num_samples} samples gives no "
                "batch at all; lower batch_size or pass drop_last=False"
            )
        self.epoch = 0
        self.position = 0  # batches of the current epoch already yielded

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return hashing.permutation(self.seed, epoch, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a changed epoch starts at its first batch (a resumed state with the
        same epoch keeps its position)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def remaining(self) -> list[torch.Tensor]:
        """This rank's index tensors for the rest of the current epoch (from the current position)."""
        order = self.order(self.epoch)
        out = []
        for step in range(self.position, len(self)):
            glob = order[step * self.batch_size : (step + 1) * self.batch_size]
            # In the last partial batch of an eval pass some ranks get fewer (possibly 0) rows; every rank
            # still takes the same number of steps, which keeps collective ops in step.
            out.append(glob[self.rank * self.per_rank : (self.rank + 1) * self.per_rank])
        return out

    def rank_batches(self) -> Iterator[torch.Tensor]:
        """Like :meth:`remaining` but advances the position as it yields, and moves to the next epoch
        after the last batch (so a state saved then resumes at that next epoch)."""
        for rows in self.remaining():
            self.position += 1
            yield rows
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "num_samples", "batch_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"loader state has {key}={state[key]} but this loader has {getattr(self, key)}; "
                    "an exact resume needs the same seed, dataset and global batch size"
                )
        if not 0 <= int(state["position"]) <= len(self):
            raise ValueError(f"loader state position {state['position']} is outside 0..{len(self)}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class PlannedLoader:
    """What both loaders share: the batch plan (order, sharding, resumable position) and the on-device
    batch augmenter. Subclasses provide ``__iter__`` and ``augment_signature``.

    Training (``train=True``): hashed shuffle, crop with ``crop_padding`` zero padding (``crop="pad"``) or
    RandomResizedCrop to ``crop_size`` with area fraction ``crop_scale`` and aspect ratio ``crop_ratio``
    (``crop="rrc"``), horizontal flip, optional RandAugment (``randaugment``, timm's spec syntax),
    normalisation with the dataset's mean/std, optional random erasing (probability ``random_erasing``),
    optional mixup (``mixup_alpha``) / cutmix (``cutmix_alpha``) applied to a sample with probability
    ``mix_prob`` (targets then become float soft labels); ``drop_last`` defaults to True. Eval
    (``train=False``): no augmentation but, with ``crop="rrc"``, Resize(shorter side ``eval_resize``,
    default crop_size / 0.875) + CenterCrop(``crop_size``); dataset order, the last partial batch kept.
    The view of sample i at epoch e is a pure function of (seed, e, i).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        crop_padding: int = 4,
        hflip: bool = True,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool | None = None,
        crop: str = "pad",
        crop_size: int | None = None,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        eval_resize: int | None = None,
        randaugment: str | None = None,
        random_erasing: float = 0.0,
    ) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        self.train = train
        self.plan = BatchPlan(
            len(dataset),
            batch_size,
            train=train,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            shuffle=shuffle,
        )
        cfg = AugmentConfig(
            crop_padding, hflip, mixup_alpha, cutmix_alpha, mix_prob, crop, crop_size, tuple(crop_scale),
            tuple(crop_ratio), randaugment, random_erasing,
        )
        if eval_resize is not None and (crop != "rrc" or eval_resize < (crop_size or 0)):
            raise ValueError(
                f"eval_resize={eval_resize} needs crop='rrc' and eval_resize >= crop_size ({crop_size}); "
                "ImageNet evaluates with eval_resize=256, crop_size=224"
            )
        self.cfg = cfg if train else AugmentConfig(0, False)
        # Eval geometry (the ImageNet protocol): Resize(shorter side) + CenterCrop(crop_size).
        self.eval_crop = crop_size if crop == "rrc" else None
        self.eval_resize = (eval_resize or round(crop_size / 0.875)) if self.eval_crop else None  # type: ignore[operator]
        self.augmenter = BatchAugmenter(self.cfg, dataset.mean, dataset.std, dataset.num_classes, self.device)

    @property
    def seed(self) -> int:
        return self.plan.seed

    @property
    def epoch(self) -> int:
        return self.plan.epoch

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    def __len__(self) -> int:
        return len(self.plan)

    def set_epoch(self, epoch: int) -> None:
        self.plan.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and position (batches already yielded) for an exact mid-epoch resume."""
        return self.plan.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan.load_state_dict(state)


class InMemoryLoader(PlannedLoader):
    """Yields :class:`Batch` from an :class:`ArrayDataset` kept (uint8) on ``device``; options and
    semantics as in :class:`PlannedLoader`."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, **options: Any) -> None:
        super().__init__(dataset, batch_size, **options)
        # One copy of the uint8 data on the device; batches are gathered from it, never from Python objects.
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)

    def make_batch(self, index: torch.Tensor, epoch: int) -> Batch:
        """The batch of dataset rows ``index`` (CPU int64) as seen at ``epoch``."""
        index = index.to(torch.int64).cpu()
        if self.train:
            x, y = self.augmenter.train_batch(self.images, self.labels, index, self.plan.seed, epoch)
        else:
            dev_index = index.to(self.device)
            x = self.augmenter.eval_batch(self.images[dev_index], self.eval_crop, self.eval_resize)
            y = self.labels[dev_index]
        return Batch(x, y, index.to(self.device))

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.plan.epoch
        for rows in self.plan.rank_batches():
            yield self.make_batch(rows, epoch)

    def augment_signature(self) -> dict[str, Any]:
        """Everything besides (epoch, index) that determines the views: for teacher-output cache manifests."""
        sig = signature(self.cfg, self.plan.seed, self.dataset.mean, self.dataset.std)
        sig.update(
            train=self.train,
            eval_crop=self.eval_crop,
            eval_resize=self.eval_resize,
            dataset=self.dataset.content_hash,
            num_samples=len(self.dataset),
            image_shape=list(self.dataset.images.shape[1:]),
        )
        return sig
