"""Models: the CIFAR-100 KD benchmark zoo, foreign (torchvision/timm) models and feature taps.

``create_model(name, num_classes=100, **kw)`` builds a zoo model (``list_models()``) or
``"torchvision:<name>"`` / ``"timm:<name>"``. Zoo models return ``(logits, [stage outputs])`` from
``forward(x, return_features=True)`` and name their default USKD feature in ``model.default_feature``.
"""

from __future__ import annotations

# Importing the family modules registers their models.
from . import mobilenetv2, resnet, resnet_cifar, shufflenetv1, shufflenetv2, tiny, vgg, wrn  # noqa: F401
from ._base import ZooModel
from .factory import ALIASES, MODELS, create_model, list_models
from .features import FeatureTap, default_feature, feature_dim, pool_feature, resolve_module

# The benchmark zoo (everything registered except the demo model).
BENCHMARK_MODELS: tuple[str, ...] = tuple(n for n in list_models() if n != "tiny_cnn")

__all__ = [
    "ALIASES",
    "BENCHMARK_MODELS",
    "MODELS",
    "FeatureTap",
    "ZooModel",
    "create_model",
    "default_feature",
    "feature_dim",
    "list_models",
    "pool_feature",
    "resolve_module",
]
