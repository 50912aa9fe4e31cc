"""Loader view options from a ``data`` config section (shared by training, evaluation and checkpoints)."""

from __future__ import annotations

from typing import Any

import torch

from unikd.data.resample import center_views

VIEW_KEYS = ("crop", "crop_size", "crop_scale", "crop_ratio", "eval_resize")


def view_options(data_cfg: dict[str, Any]) -> dict[str, Any]:
    """The geometry keyword arguments of the loaders (train and eval) from a ``data`` section; sections
    saved before these keys existed give the CIFAR defaults."""
    out = {k: data_cfg[k] for k in VIEW_KEYS if data_cfg.get(k) is not None}
    for k in ("crop_scale", "crop_ratio"):
        if k in out:
            out[k] = tuple(out[k])
    return out


def eval_view(images: torch.Tensor | list[torch.Tensor], data_cfg: dict[str, Any]) -> torch.Tensor:
    """uint8 images as the eval loader shows them (Resize + CenterCrop under ``crop=rrc``), stacked."""
    if data_cfg.get("crop") == "rrc" and data_cfg.get("crop_size"):
        size = int(data_cfg["crop_size"])
        return center_views(images, int(data_cfg.get("eval_resize") or round(size / 0.875)), size)
    return torch.stack(list(images)) if isinstance(images, list) else images


__all__ = ["VIEW_KEYS", "eval_view", "view_options"]
