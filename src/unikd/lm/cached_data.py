"""Each training example's row in a sparse-teacher cache, carried through the Trainer's data pipeline.

A cached teacher is read by sequence index, so every batch must say which cache rows its examples are. The
index is a dataset column (``teacher_index=<column>``) or, by default, the example's position in the
dataset, added by :class:`IndexedDataset`. :class:`IndexCollator` takes it out of the examples before the
user's collator runs (which would not know it) and puts it back as one ``(B,)`` tensor. Both are
deterministic per example, so a resumed run reads the rows an uninterrupted one reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

INDEX_KEY = "teacher_index"


class IndexedDataset(torch.utils.data.Dataset):
    """``dataset`` with each example's position added under ``key``."""

    def __init__(self, dataset: Any, key: str = INDEX_KEY) -> None:
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        example = self.dataset[i]
        if not isinstance(example, Mapping):
            raise ValueError(
                f"example {i} is a {type(example).__name__}; a cached teacher needs dict examples "
                "(input_ids, labels, ...)"
            )
        return {**example, self.key: i}


class IndexCollator:
    """Calls ``collator`` on the examples without ``key``; the batch gets ``key`` as an int64 ``(B,)``."""

    def __init__(self, collator: Callable[[list[Any]], Any], key: str) -> None:
        self.collator, self.key = collator, key

    def __call__(self, features: list[Any]) -> Any:
        index = []
        for f in features:
            if self.key not in f:
                raise ValueError(
                    f"an example has no {self.key!r}, so its cached teacher row is unknown: give the "
                    "datasets to the trainer's constructor (it adds the positions), or a column of cache "
                    "indices (teacher_index=<column>)"
                )
            index.append(int(f[self.key]))
        batch = self.collator([{k: v for k, v in f.items() if k != self.key} for f in features])
        batch[self.key] = torch.tensor(index, dtype=torch.long)
        return batch


def route_index(trainer: Any, column: str | None) -> str:
    """Make every batch of ``trainer`` carry its cache rows; return the batch key that holds them."""
    key = column or INDEX_KEY
    if column is None:
        if trainer.train_dataset is not None:
            trainer.train_dataset = IndexedDataset(trainer.train_dataset, key)
        if trainer.eval_dataset is not None and not isinstance(trainer.eval_dataset, dict):
            trainer.eval_dataset = IndexedDataset(trainer.eval_dataset, key)
    trainer.data_collator = IndexCollator(trainer.data_collator, key)
    # remove_unused_columns keeps only the model's forward arguments: the index must survive it
    trainer._set_signature_columns_if_needed()
    if key not in trainer._signature_columns:
        trainer._signature_columns.append(key)
    return key


__all__ = ["INDEX_KEY", "IndexCollator", "IndexedDataset", "route_index"]
