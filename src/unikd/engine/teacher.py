"""Teacher logits behind one small interface, and weight loading with clear errors.

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

from unikd.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_state_dict_any,
    safetensors_metadata,
)
from unikd.engine.run_identity import check_own_folder

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


def read_weights(path: str | Path, *, what: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and, for unikd checkpoints, their metadata (``model_name``, ``num_classes``, ``data``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; check the path")
    if path.suffix == ".safetensors":
        state = load_state_dict_any(path)
        check_own_folder(path, safetensors_metadata(path).get("run_id"), what)
        return state, {}
    obj = load_checkpoint(path)
    if isinstance(obj, dict):
        check_own_folder(path, obj.get("run_id"), what)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        keys = ("model_name", "num_classes", "in_chans", "input_size", "data", "method", "epoch")
        meta = {k: obj.get(k) for k in keys}
        return dict(obj["model"]), meta
    return load_state_dict_any(path), {}


def load_weights(model: nn.Module, state: dict[str, Tensor], *, path: str | Path, what: str) -> None:
    """``load_state_dict(strict=True)`` that explains missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
        raise ValueError(
            f"{what} {str(path)!r} does not fit model {type(model).__name__}: {'; '.join(parts)}. "
            "Is it a checkpoint of a different model or class count? Check the model name and num_classes."
        )
    model.load_state_dict(state, strict=True)


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
    the library's weights or the teacher registry's entry for ``dataset`` (:mod:`unikd.engine.pretrained`).
    """
    from unikd.models import create_model

    if pretrained:
        from unikd.engine.pretrained import pretrained_model

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
