"""Teacher logits behind one small interface: the live teacher and the cached one.

A :class:`TeacherSource` maps ``(images, epoch, index)`` to logits. The live source runs a frozen, eval-mode
teacher under ``torch.no_grad()`` (and autocast); it lives outside the optimizer and outside DDP. A cached
source (``teacher.cache``, built by ``unikd cache-teacher``) replays stored outputs instead, keyed by epoch
and dataset index, which is why those are part of the interface.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from unikd.engine.run.checkpoint import CHECKPOINT_FORMAT
from unikd.engine.run.weights import load_weights, read_weights  # noqa: F401  (re-exported)

__all__ = [
    "CHECKPOINT_FORMAT",
    "LiveTeacher",
    "TeacherSource",
    "freeze",
    "load_teacher_model",
    "load_weights",
    "open_cached_teacher",
    "read_weights",
]


class TeacherSource(Protocol):
    """Produces the teacher's logits for a batch of (already augmented, normalised) images."""

    def __call__(self, images: Tensor, epoch: int, index: Tensor) -> Tensor: ...


class LiveTeacher:
    """Runs ``model`` (frozen, eval mode) under no_grad and the given autocast context."""

    def __init__(self, model: nn.Module, autocast: Callable[[], Any] = contextlib.nullcontext) -> None:
        self.model = freeze(model)
        self.autocast = autocast

    @torch.no_grad()
    def __call__(self, images: Tensor, epoch: int, index: Tensor) -> Tensor:
        self.model.eval()  # guard against a caller flipping it back to train mode
        with self.autocast():
            return self.model(images).float()


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_teacher_model(
    model_name: str,
    checkpoint: str | Path | None,
    *,
    num_classes: int,
    device: torch.device,
    in_chans: int = 3,
    pretrained: bool = False,
    dataset: str | None = None,
    model_args: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``model_name`` and load ``checkpoint`` into it; returns the frozen model and checkpoint meta.

    A unikd checkpoint records the model it was saved from: a different ``teacher.model`` is an error
    (rather than a confusing key mismatch). Its class count wins over ``num_classes`` so that the
    preflight can report a mismatch with the student clearly. ``pretrained=True`` (no checkpoint) takes
    the library's weights or the teacher registry's entry for ``dataset``
    (:mod:`unikd.engine.teacher.pretrained`).
    """
    from unikd.models import create_model

    if pretrained:
        from unikd.engine.teacher.pretrained import pretrained_model

        model, meta = pretrained_model(
            model_name, num_classes=num_classes, in_chans=in_chans, dataset=dataset, **(model_args or {})
        )
        return freeze(model.to(device)), meta
    if checkpoint is None:
        raise ValueError(
            "teacher.checkpoint is not set; give a checkpoint file or set teacher.pretrained=true"
        )

    state, meta = read_weights(checkpoint, what="teacher.checkpoint")
    saved_name = meta.get("model_name")
    if saved_name is not None and saved_name != model_name:
        raise ValueError(
            f"teacher.checkpoint {str(checkpoint)!r} was saved from model {saved_name!r}, but "
            f"teacher.model is {model_name!r}; set teacher.model={saved_name} or pick the matching checkpoint"
        )
    n = int(meta.get("num_classes") or num_classes)
    chans = int(meta.get("in_chans") or in_chans)
    extra = {**({} if chans == 3 else {"in_chans": chans}), **(model_args or {})}
    model = create_model(model_name, num_classes=n, **extra)
    load_weights(model, state, path=checkpoint, what="teacher.checkpoint")
    return freeze(model.to(device)), meta


def open_cached_teacher(cfg: Any, train_loader: Any, device: torch.device) -> TeacherSource:
    """The ``teacher.cache`` source from ``unikd.cache`` (imported lazily: it is an optional part)."""
    try:
        from unikd.cache import open_teacher_cache
    except ImportError as exc:
        raise ImportError(
            f"teacher.cache={cfg.teacher.cache!r} needs unikd.cache.open_teacher_cache, which is not "
            f"available in this installation ({exc}); unset teacher.cache to run the teacher live"
        ) from exc
    return open_teacher_cache(cfg, train_loader, device)
