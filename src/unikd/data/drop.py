"""Dropped classes: remove some classes from a training split (``data.drop_classes``).

A student trained without some classes, and scored on all of them, measures what it learns about classes it
never saw (e.g. from a teacher that did). Only the student's TRAINING split loses them: validation and test
keep every class, the classifier keeps all C outputs, and the class list (``dataset.classes``) and the
normalisation statistics stay those of the full split.

``drop_classes`` is either a list of class indices (``[3, 5]``) or a count ``k`` (``2``): k distinct classes
drawn from ``drop_seed`` alone (default 0), so every training seed of a grid drops the same classes. A
single class is written as a list (``[3]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unikd.data import hashing
from unikd.data.dataset import ArrayDataset

# Hash stream of the count form's draw (no augmentation stream uses it).
DROP_STREAM = 400


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_drop_classes(spec: int | Sequence[int] | None, num_classes: int,
                         seed: int | None = None) -> tuple[int, ...]:
    """The sorted class indices that ``spec`` drops from a split of ``num_classes`` classes (``()``: none).

    Raises ``ValueError`` naming ``data.drop_classes`` for out-of-range, duplicate or non-integer classes,
    for a count outside ``1..num_classes-1``, for dropping every class, and for ``seed`` given with a list.
    """
    if spec is None:
        if seed is not None:
            raise ValueError("data.drop_seed is set but data.drop_classes is not; set a count, e.g. "
                             "data.drop_classes=2, or remove data.drop_seed")
        return ()
    if _is_int(spec):
        k = int(spec)  # type: ignore[arg-type]
        if not 1 <= k < num_classes:
            raise ValueError(
                f"data.drop_classes={k} asks for {k} of the {num_classes} classes to be dropped; give a "
                f"count in 1..{num_classes - 1} (at least one class must stay) or a list of classes such as "
                "[3, 5]"
            )
        rank = hashing.hash_u32(0 if seed is None else seed, 0, DROP_STREAM, torch.arange(num_classes))
        order = torch.argsort(rank * num_classes + torch.arange(num_classes))  # ties broken by index
        return tuple(sorted(int(c) for c in order[:k]))
    if seed is not None:
        raise ValueError(f"data.drop_seed only draws the classes of a count; data.drop_classes={list(spec)} "
                         "names them already: remove data.drop_seed")
    return _check_listed(spec, num_classes)


def _check_listed(spec: Sequence[int], num_classes: int) -> tuple[int, ...]:
    classes = list(spec)
    bad = [c for c in classes if not _is_int(c)]
    if bad or not classes:
        raise ValueError(f"data.drop_classes must list class indices (ints), got {classes!r}")
    out_of_range = sorted({c for c in classes if not 0 <= c < num_classes})
    if out_of_range:
        raise ValueError(
            f"data.drop_classes lists {out_of_range}, outside the classes 0..{num_classes - 1} of this data"
        )
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise ValueError(f"data.drop_classes lists class(es) {dupes} more than once: {classes}")
    if len(classes) == num_classes:
        raise ValueError(
            f"data.drop_classes lists all {num_classes} classes, which leaves no training data; keep at "
            "least one"
        )
    return tuple(sorted(classes))


def drop_classes(dataset: ArrayDataset, classes: Sequence[int]) -> ArrayDataset:
    """``dataset`` without the samples of ``classes`` (same class list, statistics, name and split).

    The result records ``dropped_classes`` (sorted) and ``dropped_samples`` (how many were removed). An
    empty ``classes`` returns ``dataset`` itself.
    """
    if not classes:
        return dataset
    drop = torch.zeros(dataset.num_classes, dtype=torch.bool)
    drop[list(classes)] = True
    keep = ~drop[dataset.labels]
    if not bool(keep.any()):
        raise ValueError(f"dropping classes {sorted(classes)} leaves no training samples")
    out = ArrayDataset(dataset.images[keep], dataset.labels[keep], dataset.classes, dataset.mean, dataset.std,
                       name=dataset.name, split=dataset.split)
    out.dropped_classes = tuple(sorted(int(c) for c in classes))
    out.dropped_samples = len(dataset) - len(out)
    return out


def apply_drop(dataset: ArrayDataset, spec: int | Sequence[int] | None, seed: int | None) -> ArrayDataset:
    """:func:`drop_classes` of what ``spec`` / ``seed`` (``data.drop_classes`` / ``data.drop_seed``) name."""
    return drop_classes(dataset, resolve_drop_classes(spec, dataset.num_classes, seed))


def describe_drop(dataset: ArrayDataset) -> str | None:
    """One line for the preflight table naming the dropped classes, or None when none were dropped."""
    dropped = getattr(dataset, "dropped_classes", ())
    if not dropped:
        return None
    # class names where they say more than the index (CIFAR's "cat"; not digits' "3")
    names = ", ".join(str(c) if dataset.classes[c] == str(c) else f"{c} ({dataset.classes[c]})"
                      for c in dropped)
    return (f"{len(dropped)} of {dataset.num_classes} classes removed from the training split: {names} "
            f"({dataset.dropped_samples} images); validation and test keep every class")


__all__ = ["apply_drop", "describe_drop", "drop_classes", "resolve_drop_classes"]
