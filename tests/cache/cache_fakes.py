"""Tiny stand-ins for the training stream and the teacher, for the storage/writer/reader tests.

The fake loader has the same contract as ``InMemoryLoader``: the view of sample ``i`` at epoch ``e`` is a
pure function of ``(seed, e, i)`` and the order of epoch ``e`` a pure function of ``(seed, e)``; with
``world_size > 1`` rank ``r`` yields its slice of every global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FakeBatch:
    images: torch.Tensor
    target: torch.Tensor
    index: torch.Tensor


def view(seed: int, epoch: int, index: torch.Tensor, dim: int = 6) -> torch.Tensor:
    """A deterministic 'augmented view' (B, dim) of each dataset index."""
    out = []
    for i in index.tolist():
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + i)
        out.append(torch.randn(dim, generator=g))
    return torch.stack(out)


class FakeLoader:
    def __init__(self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, dim: int = 6) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.drop_last, self.dim = rank, world_size, drop_last, dim
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        for step in range(len(self)):
            rows = order[step * self.batch_size:(step + 1) * self.batch_size]
            rows = rows.chunk(self.world_size)[self.rank] if self.world_size > 1 else rows
            yield FakeBatch(view(self.seed, self.epoch, rows, self.dim), rows % 3, rows)

    def augment_signature(self) -> dict:
        return {"seed": self.seed, "dim": self.dim, "crop_padding": 4, "mixup_alpha": 0.0}


class CountingTeacher:
    """A fixed linear 'teacher' (dim -> classes) that counts its forward calls and can fail on purpose."""

    def __init__(self, dim: int = 6, classes: int = 10, *, scale: float = 3.0, fail_after: int | None = None):
        g = torch.Generator().manual_seed(123)
        self.weight = torch.randn(classes, dim, generator=g) * scale
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        return images @ self.weight.T


def identity(**changes) -> dict:
    base = {
        "teacher_model": "fake",
        "teacher_sha256": "ab" * 32,
        "dataset_hash": "cd" * 32,
        "num_samples": 20,
        "num_classes": 10,
        "augment_signature": FakeLoader(20, 4).augment_signature(),
        "seed": 0,
        "batch_size": 4,
        "world_size": 1,
        "device_type": "cpu",
        "precision": "fp32",
        "channels_last": False,
    }
    base.update(changes)
    return base
