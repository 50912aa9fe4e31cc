"""``torchvision:<name>`` and ``timm:<name>`` models (the optional ``vision`` extra)."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

_EXTRA_HINT = "pip install 'unikd[vision]'"
_SOURCES = ("torchvision", "timm")


def _import(package: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"model names starting with '{package}:' need the {package} package, which is not installed "
            f"({exc}); install the vision extra: {_EXTRA_HINT}"
        ) from exc


def _replace_last_linear(model: nn.Module, num_classes: int) -> None:
    """Swap the final ``nn.Linear`` (the classifier) for a fresh one with ``num_classes`` outputs."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ValueError(
            f"cannot find a final nn.Linear in {type(model).__name__} to resize to {num_classes}"
        )
    name, old = last
    parent_path, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def _torchvision(name: str, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    tv_models = _import("torchvision.models")
    available = tv_models.list_models()
    if name not in available:
        from ..registry import unknown_name_message

        raise ValueError(unknown_name_message("torchvision model", name, available))
    if not pretrained:
        return tv_models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    # Pretrained weights come with their own head size; load them, then swap the head when it differs.
    model = tv_models.get_model(name, weights="DEFAULT", **kwargs)
    if num_classes != 1000:
        _replace_last_linear(model, num_classes)
    return model


def _timm(name: str, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    timm = _import("timm")
    if not timm.is_model(name):
        from ..registry import unknown_name_message

        raise ValueError(unknown_name_message("timm model", name, timm.list_models()))
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def create_foreign_model(
    spec: str, num_classes: int = 100, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build ``"torchvision:<name>"`` or ``"timm:<name>"`` with ``num_classes`` outputs.

    Random initialisation unless ``pretrained=True`` (which downloads weights, so it needs internet or a
    filled torch hub / Hugging Face cache). Extra ``kwargs`` go to the library's factory.
    """
    source, _, name = spec.partition(":")
    if source not in _SOURCES or not name:
        raise ValueError(
            f"model {spec!r}: expected 'torchvision:<name>' or 'timm:<name>' (e.g. 'torchvision:resnet18', "
            f"'timm:deit_tiny_patch16_224'), or a zoo name from unikd.models.list_models()"
        )
    build = _torchvision if source == "torchvision" else _timm
    return build(name, num_classes, bool(pretrained), **kwargs)
