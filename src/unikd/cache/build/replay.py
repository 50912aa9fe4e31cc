"""Build a teacher-output cache from a training config: :func:`build_teacher_cache` (``unikd cache-teacher``).

This is the part of :mod:`unikd.cache` that sits above the engine (it composes the trainer's own builders);
reading a cache (:func:`unikd.cache.open_teacher_cache`) is a leaf below it. The build derives the cache
identity with the same :func:`~unikd.cache.source.run_identity` as the runs that read it.

The build walks the training loader the harness itself would create (same dataset, seed, global batch size,
augmentation and rank split) and runs the teacher exactly as the live teacher does (eval mode, no_grad,
same device, autocast precision and memory format), so in fp32 every cached logit is bit-identical to the
one the live teacher would have produced at that step.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from unikd.cache.build.writer import write_cache
from unikd.cache.manifest import identity_key
from unikd.cache.source import require_teacher, run_identity
from unikd.cache.storage import FULL, TOPK

__all__ = ["build_teacher_cache", "choose_storage", "default_cache_dir", "write_cache"]

# Full logits up to this many classes (ImageNet-1k included); top-k above it.
MAX_FULL_CLASSES = 1024
DEFAULT_TOPK = 20


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
    from unikd.engine.loop import setup
    from unikd.engine.run.distributed import DistInfo

    train_ds, val_ds = setup.build_datasets(cfg)
    loaders = [setup.build_loaders(cfg, DistInfo(rank, world_size, 0, device), train_ds, val_ds)[0]
               for rank in range(world_size)]
    return loaders, int(cfg.num_classes or train_ds.num_classes)


def _teacher_fn(cfg: Any, device: torch.device, num_classes: int) -> Any:
    """images -> logits, computed by the trainer's own live teacher (same model setup and autocast)."""
    from unikd.engine.loop import setup
    from unikd.engine.run.distributed import DistInfo, autocast_factory

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
    from unikd import integrity

    require_teacher(cfg, "unikd cache-teacher")
    with integrity.policy(getattr(cfg, "integrity", "lenient")):  # the teacher checkpoint is read here
        return _build(cfg, out_dir, epochs=epochs, dtype=dtype, topk=topk, world_size=world_size,
                      overwrite=overwrite, show_progress=show_progress)


def _build(cfg: Any, out_dir: str | Path | None, *, epochs: int | None, dtype: str, topk: int | None,
           world_size: int, overwrite: bool, show_progress: bool) -> Path:
    from unikd import __version__
    from unikd.engine.run.distributed import resolve_device

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
