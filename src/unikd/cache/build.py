"""Config-level entry points: :func:`build_teacher_cache` (``unikd cache-teacher``) and
:func:`open_teacher_cache` (``teacher.cache`` in ``unikd train``).

Both derive the cache identity with :func:`run_identity` from the same things -- the config, the training
loader and the device -- so a build and the runs that read it cannot disagree on what "the same stream"
means. The build walks the training loader the harness itself would create (same dataset, seed, global
batch size, augmentation and rank split) and runs the teacher exactly as the live teacher does (eval mode,
no_grad, same device, autocast precision and memory format), so in fp32 every cached logit is bit-identical
to the one the live teacher would have produced at that step.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from unikd.cache.manifest import identity_key, sha256_file
from unikd.cache.reader import TeacherCache
from unikd.cache.storage import FULL, TOPK
from unikd.cache.writer import write_cache

# Full logits up to this many classes (ImageNet-1k included); top-k above it.
MAX_FULL_CLASSES = 1024
DEFAULT_TOPK = 20


def _require_teacher(cfg: Any, what: str) -> None:
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


def run_identity(cfg: Any, loader: Any, device: torch.device, *, world_size: int,
                 teacher_sha256: str | None = None) -> dict[str, Any]:
    """The manifest identity of the stream ``loader`` yields for a run configured by ``cfg``."""
    dataset = loader.dataset
    return {
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


def choose_storage(num_classes: int, *, dtype: str = "fp16", topk: int | None = None) -> dict[str, Any]:
    """Storage settings: full logits when ``num_classes <= 1024`` unless ``topk`` forces top-k."""
    if topk is None and num_classes > MAX_FULL_CLASSES:
        topk = DEFAULT_TOPK
    if topk is not None and not 1 <= int(topk) < num_classes:
        raise ValueError(f"topk={topk} must be between 1 and num_classes-1 ({num_classes - 1})")
    if topk is None:
        return {"mode": FULL, "dtype": dtype, "k": None}
    return {"mode": TOPK, "dtype": dtype, "k": int(topk)}


def default_cache_dir(cfg: Any, identity: dict[str, Any], storage: dict[str, Any]) -> Path:
    """``teacher.cache`` if set, else ``$UNIKD_CACHE/teacher-cache/<teacher>-seed<seed>-<key>``.

    ``$UNIKD_CACHE`` defaults to ``~/.cache/unikd``. The key hashes identity + storage, so every run that
    can share a cache (e.g. all methods of a benchmark grid with the same teacher, data and seed) lands on
    the same folder, wherever its ``out_dir`` is, and runs that cannot never collide.
    """
    from unikd.data.cache import default_cache_dir as unikd_cache_root

    if cfg.teacher.cache:
        return Path(cfg.teacher.cache)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(cfg.teacher.model))
    key = identity_key(identity, storage)
    return unikd_cache_root() / "teacher-cache" / f"{name}-seed{identity['seed']}-{key}"


def _stream_parts(cfg: Any, device: torch.device, world_size: int) -> tuple[list[Any], int]:
    """One training loader per rank, built by the trainer's own setup code, and the class count."""
    from unikd.engine import setup
    from unikd.engine.distributed import DistInfo

    train_ds, val_ds = setup.build_datasets(cfg)
    loaders = [setup.build_loaders(cfg, DistInfo(rank, world_size, 0, device), train_ds, val_ds)[0]
               for rank in range(world_size)]
    return loaders, int(cfg.num_classes or train_ds.num_classes)


def _teacher_fn(cfg: Any, device: torch.device, num_classes: int) -> Any:
    """images -> logits, computed by the trainer's own live teacher (same model setup and autocast)."""
    from unikd.engine import setup
    from unikd.engine.distributed import DistInfo
    from unikd.engine.evaluate import autocast_factory

    live_cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, cache=None))
    live, _, _ = setup.build_teacher(live_cfg, num_classes, DistInfo(0, 1, 0, device), None,
                                autocast_factory(cfg.precision, device))

    def forward(images: torch.Tensor) -> torch.Tensor:
        if cfg.channels_last:  # the trainer converts each batch before calling the teacher
            images = images.contiguous(memory_format=torch.channels_last)
        return live(images, 0, None)

    return forward


def build_teacher_cache(
    cfg: Any,
    out_dir: str | Path | None = None,
    *,
    epochs: int | None = None,
    dtype: str = "fp16",
    topk: int | None = None,
    world_size: int = 1,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Build (or finish, extend, or just reuse) the teacher cache for the runs configured by ``cfg``.

    Args:
        cfg: the training config (``unikd.engine.config.Config``) of the runs that will read the cache.
        out_dir: cache folder; default :func:`default_cache_dir`.
        epochs: epochs to cache (default ``cfg.epochs``); a cache may hold more epochs than a run needs.
        dtype: ``"fp16"`` (default) or ``"fp32"`` (bit-exact replays in full-logit mode).
        topk: store top-k + residual log-mass with this k; default full logits when the class count is
            <= 1024, else k=20.
        world_size: DDP ranks of the training runs; each rank's per-step teacher batch is replayed.
        overwrite: replace a cache of another run found in ``out_dir`` instead of failing.

    Idempotent and resumable: a complete cache with the same identity is returned as is (extended when
    more epochs are asked for), finished shards of an interrupted build are kept.
    """
    from unikd import __version__
    from unikd.engine.distributed import resolve_device

    _require_teacher(cfg, "unikd cache-teacher")
    epochs = int(cfg.epochs if epochs is None else epochs)
    if world_size < 1 or cfg.data.batch_size % world_size:
        raise ValueError(
            f"world_size={world_size} must be >= 1 and divide data.batch_size={cfg.data.batch_size}"
        )
    device = resolve_device(cfg.device)
    loaders, num_classes = _stream_parts(cfg, device, world_size)
    identity = run_identity(cfg, loaders[0], device, world_size=world_size)
    storage = choose_storage(num_classes, dtype=dtype, topk=topk)
    folder = Path(out_dir) if out_dir is not None else default_cache_dir(cfg, identity, storage)
    return write_cache(
        folder, teacher_fn=_teacher_fn(cfg, device, num_classes), loaders=loaders, epochs=epochs,
        identity=identity, num_samples=identity["num_samples"], num_classes=num_classes, overwrite=overwrite,
        show_progress=show_progress, info={"teacher_checkpoint": str(cfg.teacher.checkpoint),
                                           "unikd_version": __version__, "torch_version": torch.__version__},
        **storage,
    )


def open_teacher_cache(cfg: Any, train_loader: Any, device: torch.device | str) -> TeacherCache:
    """The ``teacher.cache`` source for a run: validated against the run, callable as
    ``(images, epoch, index) -> (B, C) float32 logits on device``.

    Raises :class:`~unikd.cache.CacheMismatchError` naming the field, the cached and the run's value when
    the cache was built for another teacher, dataset, augmentation (incl. mixup/cutmix), seed, batch size,
    world size, device type, precision or memory format, or holds fewer epochs than ``cfg.epochs``.
    """
    _require_teacher(cfg, f"teacher.cache={cfg.teacher.cache!r}")
    cache = TeacherCache(cfg.teacher.cache, device)
    plan = getattr(train_loader, "plan", None)
    world_size = int(getattr(plan, "world_size", 1))
    identity = run_identity(cfg, train_loader, torch.device(device), world_size=world_size)
    cache.check(identity, int(cfg.epochs))
    return cache
