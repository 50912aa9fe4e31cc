"""Write a teacher-output cache from a training stream (the part that knows nothing about configs).

:func:`write_cache` walks E epochs of the exact training stream -- the same loader, epoch order and
global batches that training will see -- runs the teacher on every batch and stores the logits by dataset
index, one shard per epoch. It is idempotent and resumable: a complete cache with the same identity is
reused (and extended when more epochs are asked for), finished shards of an interrupted build are kept,
and a folder holding another run's cache is never silently overwritten.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unikd._atomic import stale_temp_files
from unikd._lock import FolderLock
from unikd._progress import progress
from unikd.cache import storage
from unikd.cache.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    PARTIAL,
    STORAGE_FIELDS,
    CacheMismatchError,
    check_identity,
    normalise,
    read_manifest,
    write_manifest,
)
from unikd.integrity import sha256_file

LOCK = ".lock"


def _clear(folder: Path) -> None:
    """Remove everything a previous build left (shards, manifests, temporaries), nothing else."""
    for path in folder.iterdir():
        name = path.name
        is_ours = (
            name in (MANIFEST, PARTIAL)
            or (name.startswith("e") and name.endswith(".npy"))
            or (name.startswith(".") and ".tmp" in name)
        )
        if is_ours and path.is_file():
            path.unlink()
        elif is_ours and path.is_dir():
            shutil.rmtree(path)


def _check_reusable(found: dict[str, Any], target: dict[str, Any], folder: Path, what: str) -> None:
    fix = (
        "Point the build at another folder, or pass --overwrite (overwrite=True) to replace it."
    )
    check_identity(found["identity"], target["identity"], where=folder, fix=f"It holds {what}. {fix}")
    check_identity(found, target, where=folder, fix=f"It holds {what} stored differently. {fix}",
                   fields=STORAGE_FIELDS)


def _check_shard(path: Path, row: np.dtype, shape: tuple[int, ...], num_samples: int) -> None:
    array = storage.open_shard(path)
    if array.dtype != row or array.shape != (num_samples, *shape):
        raise CacheMismatchError(
            f"shard {path} has dtype {array.dtype} and shape {array.shape}, expected {row} and "
            f"{(num_samples, *shape)}; delete it (or pass --overwrite) and rebuild"
        )


def write_cache(
    folder: str | Path,
    *,
    teacher_fn: Callable[[torch.Tensor], torch.Tensor],
    loaders: Sequence[Any],
    epochs: int,
    identity: dict[str, Any],
    mode: str,
    dtype: str,
    k: int | None,
    num_samples: int,
    num_classes: int,
    overwrite: bool = False,
    show_progress: bool = True,
    info: dict[str, Any] | None = None,
) -> Path:
    """Cache ``teacher_fn``'s logits over ``epochs`` epochs of the stream given by ``loaders``.

    Args:
        folder: cache folder (created if needed).
        teacher_fn: images -> (B, C) logits, computed exactly as the live teacher would (eval mode,
            no_grad, same device/precision).
        loaders: one loader per rank of the run (``world_size`` of them), each with ``set_epoch`` and
            yielding batches with ``images`` and ``index``; rank loaders are advanced in lock step so each
            teacher forward sees exactly the rows that rank's live teacher would see.
        epochs: number of epochs to cache (shards 0..epochs-1).
        identity: the manifest identity (see :mod:`unikd.cache.manifest`).
        mode, dtype, k: storage (``"full"``/``"topk"``, ``"fp16"``/``"fp32"``, top-k size or None).
        overwrite: replace a cache of another run found in ``folder`` instead of failing.
        info: extra informational manifest entries (teacher checkpoint path, versions, ...).

    Returns:
        The cache folder. Its ``manifest.json`` is written last, after every shard is in place.
    """
    folder = Path(folder)
    if int(epochs) < 1:
        raise ValueError(f"epochs={epochs} must be >= 1 (the number of training epochs to cache)")
    if not loaders:
        raise ValueError("loaders must hold at least one loader (one per rank)")
    row, shape = storage.shard_dtype(mode, dtype, num_classes, k)
    target = normalise({
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "dtype": dtype,
        "k": k if mode == storage.TOPK else None,
        "num_classes": num_classes,
        "num_samples": num_samples,
        "bytes_per_sample": storage.bytes_per_sample(mode, dtype, num_classes, k),
        "identity": identity,
        **(info or {}),
    })
    folder.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder, LOCK, "unikd cache-teacher", fix="Wait for that build to finish.")
    with lock:
        resumed = _resume(folder, target, epochs, overwrite)
        if resumed is None:
            return folder  # idempotent: nothing to do (a deleted shard is rebuilt)
        epochs, sums = resumed
        for stale in [*folder.glob(".e*.npy.tmp*"), *stale_temp_files(folder, own=True)]:
            # an epoch interrupted mid-way is recomputed from its start; a killed manifest write is dropped
            # (we hold the lock, so no live writer owns these)
            stale.unlink(missing_ok=True)
        todo, shards = _plan_epochs(folder, epochs, sums, row, shape, num_samples)

        def record(epoch: int, path: Path) -> None:
            shards[path.name] = _entry(folder, epoch, path.name, sha256_file(path))
            write_manifest({**target, "epochs": epochs, "complete": False,
                            "shards": sorted(shards.values(), key=lambda s: s["epoch"])}, folder / PARTIAL)

        write_manifest({**target, "epochs": epochs, "complete": False,
                        "shards": sorted(shards.values(), key=lambda s: s["epoch"])}, folder / PARTIAL)
        start = time.perf_counter()
        steps = len(loaders[0])
        bar = progress(_stream(loaders, todo), total=len(todo) * steps, desc="cache-teacher",
                       enabled=show_progress)
        _write_epochs(folder, bar, teacher_fn, mode, dtype, k, num_classes, num_samples, record)
        entries = [shards[storage.shard_name(e)] for e in range(epochs)]
        manifest = {
            **target,
            "epochs": epochs,
            "complete": True,
            "shards": entries,
            "total_bytes": sum(s["bytes"] for s in entries),
            "build_seconds_last_run": round(time.perf_counter() - start, 3),
            "epochs_built_last_run": len(todo),
        }
        write_manifest(manifest, folder / MANIFEST)
        (folder / PARTIAL).unlink(missing_ok=True)
    return folder


def _resume(
    folder: Path, target: dict[str, Any], epochs: int, overwrite: bool
) -> tuple[int, dict[str, str | None]] | None:
    """What a complete or partial cache already in ``folder`` contributes: the epoch count (never shrunk)
    and the recorded shard checksums; None when a complete cache of this run already holds every epoch.
    A damaged or foreign cache fails, or is cleared with ``overwrite``."""
    try:
        done = read_manifest(folder)
        partial = read_manifest(folder, PARTIAL)
    except ValueError:  # unreadable or damaged manifest (IntegrityError included)
        if not overwrite:
            raise
        _clear(folder)
        return epochs, {}
    sums: dict[str, str | None] = {}  # shard file -> sha256 recorded when it was committed
    try:
        if done is not None:
            _check_reusable(done, target, folder, "a complete cache of another run")
            epochs = max(epochs, int(done["epochs"]))
            sums.update(_recorded_sums(done))
            if all((folder / storage.shard_name(e)).exists() for e in range(epochs)):
                return None
        if partial is not None:
            _check_reusable(partial, target, folder, "a partly built cache of another run")
            sums.update(_recorded_sums(partial))
    except CacheMismatchError:
        if not overwrite:
            raise
        _clear(folder)
        return epochs, {}
    return epochs, sums


def _plan_epochs(
    folder: Path, epochs: int, sums: dict[str, str | None], row: np.dtype, shape: tuple[int, ...],
    num_samples: int,
) -> tuple[list[int], dict[str, dict[str, Any]]]:
    """The epochs still to build, and the manifest entries of the shards already in place."""
    todo = []
    shards: dict[str, dict[str, Any]] = {}
    for epoch in range(epochs):
        path = folder / storage.shard_name(epoch)
        if path.exists() and path.name in sums:
            _check_shard(path, row, shape, num_samples)
            shards[path.name] = _entry(folder, epoch, path.name, sums[path.name])
        else:
            # Never built, or committed by a build killed before it recorded the shard's checksum.
            path.unlink(missing_ok=True)
            todo.append(epoch)
    return todo, shards


def _recorded_sums(manifest: dict[str, Any]) -> dict[str, str | None]:
    """Shard file -> recorded sha256 (None for a complete cache written before checksums existed)."""
    return {s["file"]: s.get("sha256") for s in manifest.get("shards") or [] if isinstance(s, dict)}


def _entry(folder: Path, epoch: int, name: str, sha: str | None) -> dict[str, Any]:
    return {"epoch": epoch, "file": name, "bytes": (folder / name).stat().st_size, "sha256": sha}


def _stream(loaders: Sequence[Any], epochs: list[int]) -> Any:
    """(epoch, batches of every rank) for each global step of the given epochs, in training order."""
    for epoch in epochs:
        for loader in loaders:
            loader.set_epoch(epoch)
        for rank_batches in zip(*loaders, strict=True):
            yield epoch, rank_batches


@torch.no_grad()
def _write_epochs(folder: Path, steps: Any, teacher_fn: Callable[[torch.Tensor], torch.Tensor], mode: str,
                  dtype: str, k: int | None, num_classes: int, num_samples: int,
                  on_commit: Callable[[int, Path], None]) -> None:
    """Fill one temporary shard per epoch from the step stream; commit each when its epoch ends and report
    it to ``on_commit(epoch, path)`` (which records its checksum)."""
    row, shape = storage.shard_dtype(mode, dtype, num_classes, k)
    current: int | None = None
    array: np.memmap | None = None
    tmp = final = Path()
    try:
        for epoch, rank_batches in steps:
            if epoch != current:
                if array is not None:
                    storage.commit_shard(array, tmp, final)
                    array = None
                    on_commit(current, final)
                current = epoch
                final = folder / storage.shard_name(epoch)
                tmp = folder / f".{final.name}.tmp-{os.getpid()}"
                array = storage.open_shard_for_write(tmp, row, shape, num_samples)
            for batch in rank_batches:
                index = batch.index.detach().cpu().numpy()
                logits = teacher_fn(batch.images)
                if tuple(logits.shape) != (len(index), num_classes):
                    raise ValueError(
                        f"the teacher returned logits of shape {tuple(logits.shape)} for a batch of "
                        f"{len(index)} images, expected ({len(index)}, {num_classes}); check teacher.model, "
                        "teacher.checkpoint and num_classes"
                    )
                array[index] = storage.encode_rows(logits, mode, dtype, k)
            if hasattr(steps, "set_postfix"):
                steps.set_postfix(epoch=epoch)
        if array is not None:
            storage.commit_shard(array, tmp, final)
            array = None
            on_commit(current, final)
    finally:
        if array is not None:  # interrupted mid-epoch: drop the partial shard, keep the finished ones
            del array
            tmp.unlink(missing_ok=True)
