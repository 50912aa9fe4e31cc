"""The ``teacher.cache`` source of a training run: :func:`open_teacher_cache` and the stream identity.

Reading a cache is a leaf the engine uses: this module needs only the run's config (read by attribute),
its training loader and the cache files; it imports nothing from :mod:`unikd.engine`. Building a cache
(:mod:`unikd.cache.build`) composes the engine and derives the identity with the same
:func:`run_identity`, so a build and the runs that read it cannot disagree on what "the same stream" means.
"""

from __future__ import annotations

from typing import Any

import torch

from unikd._files import require_regular_file
from unikd.cache.manifest import CacheMismatchError, normalise
from unikd.cache.reader import TeacherCache
from unikd.integrity import sha256_file

# What the identity records of a transfer set (data.transfer): enough to name the stream in a mismatch.
TRANSFER_FIELDS = ("name", "split", "images", "size", "channels")


def require_teacher(cfg: Any, what: str) -> None:
    """The settings a cache is keyed on: a teacher checkpoint (hashed) and the in-memory loader."""
    if not cfg.teacher.model or not cfg.teacher.checkpoint:
        raise ValueError(
            f"{what} needs teacher.model and teacher.checkpoint (got {cfg.teacher.model!r} "
            f"and {cfg.teacher.checkpoint!r}): the cache is tied to the sha256 of the teacher checkpoint; "
            "set both"
        )
    if cfg.data.loader != "memory":
        raise ValueError(
            f"{what} needs data.loader=memory (got {cfg.data.loader!r}): only the in-memory loader makes "
            "each augmented view a pure function of (seed, epoch, index), which the cache relies on"
        )
    require_regular_file(cfg.teacher.checkpoint, "teacher.checkpoint")  # hashed for the cache identity


def run_identity(cfg: Any, loader: Any, device: torch.device, *, world_size: int,
                 teacher_sha256: str | None = None) -> dict[str, Any]:
    """The manifest identity of the stream ``loader`` yields for a run configured by ``cfg``."""
    dataset = loader.dataset
    dropped = list(getattr(dataset, "dropped_classes", ()))
    source = getattr(dataset, "transfer_source", None)  # set by unikd.data.transfer for a transfer set
    transfer = {k: source[k] for k in TRANSFER_FIELDS} if source else None
    return {
        # only when set, so the identity (and the default folder name) of other caches stays as it was
        **({"dropped_classes": dropped} if dropped else {}),
        **({"transfer": transfer} if transfer else {}),
        "teacher_model": cfg.teacher.model,
        "teacher_sha256": teacher_sha256 or sha256_file(cfg.teacher.checkpoint),
        "dataset_hash": dataset.content_hash,
        "num_samples": len(dataset),
        "num_classes": int(cfg.num_classes or dataset.num_classes),
        "augment_signature": loader.augment_signature(),
        "seed": int(loader.seed),
        "batch_size": int(loader.batch_size),
        "world_size": int(world_size),
        "device_type": torch.device(device).type,
        "precision": cfg.precision,
        "channels_last": bool(cfg.channels_last),
    }


def open_teacher_cache(cfg: Any, train_loader: Any, device: torch.device | str) -> TeacherCache:
    """The ``teacher.cache`` source for a run: validated against the run, callable as
    ``(images, epoch, index) -> (B, C) float32 logits on device``.

    Raises :class:`~unikd.cache.CacheMismatchError` naming the field, the cached and the run's value when
    the cache was built for another teacher, dataset, augmentation (incl. mixup/cutmix), seed, batch size,
    world size, device type, precision or memory format, or holds fewer epochs than ``cfg.epochs``;
    :class:`~unikd.integrity.IntegrityError` when the manifest or a shard was damaged.
    """
    require_teacher(cfg, f"teacher.cache={cfg.teacher.cache!r}")
    cache = TeacherCache(cfg.teacher.cache, device)
    plan = getattr(train_loader, "plan", None)
    world_size = int(getattr(plan, "world_size", 1))
    identity = run_identity(cfg, train_loader, torch.device(device), world_size=world_size)
    _check_dropped(cache, identity)
    _check_transfer(cache, identity)
    cache.check(identity, int(cfg.epochs))
    return cache


def _check_dropped(cache: TeacherCache, identity: dict[str, Any]) -> None:
    """A cache serves only the training stream it replayed: dropping classes renumbers the samples and
    changes the epoch order and the mixup partners, so a full-set cache holds other views' logits."""
    have, want = cache.identity.get("dropped_classes") or [], identity.get("dropped_classes") or []
    if list(have) == list(want):
        return
    what = f"drops classes {want}" if want else "keeps every class"
    built = f"without classes {list(have)}" if have else "for the full training set"
    raise CacheMismatchError(
        f"teacher cache {cache.folder} was built {built}, but this run {what} (data.drop_classes): the "
        "training stream differs (its samples, their indices, the epoch order and mixup partners), so the "
        "cached logits belong to other views. Build a cache for this run with the same data.drop_classes "
        "('unikd cache-teacher CONFIG.yaml [overrides] --out DIR', the teacher itself is unchanged) and set "
        "teacher.cache=DIR."
    )


def _stream_name(transfer: dict[str, Any] | None) -> str:
    if not transfer:
        return "the task's own training split"
    return f"the transfer set {transfer['name']} ({transfer['split']} split, {transfer['images']} images)"


def _check_transfer(cache: TeacherCache, identity: dict[str, Any]) -> None:
    """A cache of the task's training stream holds no logits of a transfer set's views, and a cache of one
    transfer set none of another's (other images under the same dataset indices)."""
    have, want = cache.identity.get("transfer"), identity.get("transfer")
    if normalise(have) == normalise(want):
        return
    raise CacheMismatchError(
        f"teacher cache {cache.folder} was built for {_stream_name(have)}, but this run trains on "
        f"{_stream_name(want)} (data.transfer): the training images differ under the same dataset indices, "
        "so "
        "the cached logits belong to other images. Build a cache for this run with the same data.transfer "
        "('unikd cache-teacher CONFIG.yaml [overrides] --out DIR', the teacher itself is unchanged) and set "
        "teacher.cache=DIR."
    )
