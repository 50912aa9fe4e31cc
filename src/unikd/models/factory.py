"""The model registry, ``create_model`` and ``list_models``."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Registry

MODELS: Registry[nn.Module] = Registry("model")

# Names used by the CRD/RepDistiller and DKD/mdistiller model files, so their configs translate directly.
ALIASES: dict[str, str] = {
    "mobile_half": "mobilenetv2",
    "MobileNetV2": "mobilenetv2",
    "ShuffleV1": "shufflenetv1",
    "ShuffleV2": "shufflenetv2",
    "ResNet18": "resnet18",
    "ResNet34": "resnet34",
    "ResNet50": "resnet50",
    **{f"vgg{d}_bn": f"vgg{d}" for d in (8, 11, 13, 16, 19)},
}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Register a zoo model factory ``factory(num_classes=..., in_chans=..., **kw) -> nn.Module``."""
    MODELS.register(name, factory)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names accepted by :func:`create_model` (excluding aliases and ``torchvision:``/``timm:``).

    ``pattern`` is a shell-style filter, e.g. ``list_models("wrn*")``.
    """
    return [n for n in MODELS.names() if fnmatch.fnmatchcase(n, pattern)]


def create_model(name: str, num_classes: int = 100, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Args:
        name: a zoo name from :func:`list_models` (e.g. ``"resnet20"``, ``"wrn_40_2"``), an alias used by
            the RepDistiller/mdistiller code (``"ShuffleV2"``, ``"vgg13_bn"``, ...), or
            ``"torchvision:<name>"`` / ``"timm:<name>"`` (needs ``pip install 'unikd[vision]'``).
        num_classes: classifier size.
        **kwargs: extra constructor arguments, e.g. ``in_chans=1`` for zoo models, ``pretrained=True`` for
            foreign models.

    Returns:
        The model, randomly initialised (foreign models load pretrained weights only when asked).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if ":" in name:
        from .foreign import create_foreign_model

        return create_foreign_model(name, num_classes=num_classes, **kwargs)
    name = ALIASES.get(name, name)
    factory = MODELS.get(name)  # unknown names fail here with the closest valid name
    accepted = inspect.signature(factory).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if "pretrained" in unknown:
        raise ValueError(
            f"zoo model {name!r} has no bundled pretrained weights (pretrained=...); train one or load a "
            "checkpoint (e.g. the config key teacher.checkpoint), or use a 'torchvision:'/'timm:' model"
        )
    if unknown:
        valid = ", ".join(k for k in accepted if k != "num_classes")
        raise ValueError(f"model {name!r} got unexpected argument(s) {unknown}; it accepts: {valid}")
    return factory(num_classes=num_classes, **kwargs)
