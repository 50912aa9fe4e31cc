"""Shared base class and initialisers of the CIFAR zoo models."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ZooModel(nn.Module):
    """Base of every zoo model: one forward that can also return the stage outputs.

    Subclasses implement ``_forward_impl(x) -> (logits, [stage outputs])`` and set three attributes:

    * ``stage_names``: module paths whose outputs are the stage outputs, in order; ``features[i]`` returned by
      ``forward(x, return_features=True)`` is exactly the output of module ``stage_names[i]`` (so a
      :class:`~unikd.models.FeatureTap` on that path captures the same tensor).
    * ``stage_channels``: channel count of each stage output.
    * ``default_feature``: the module path of the USKD weak-head feature, the second-to-last stage.
    """

    stage_names: tuple[str, ...] = ()
    stage_channels: tuple[int, ...] = ()
    default_feature: str = ""

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits ``(N, num_classes)``; with ``return_features=True`` also the list of stage outputs."""
        logits, features = self._forward_impl(x)
        if return_features:
            return logits, features
        return logits

    def _set_stages(self, names: tuple[str, ...], channels: tuple[int, ...]) -> None:
        # Instance attributes (not class ones) because widths depend on the constructor arguments.
        self.stage_names = names
        self.stage_channels = channels
        self.default_feature = names[-2]


def init_kaiming_fan_out(model: nn.Module) -> None:
    """He-normal (fan_out) convolutions and unit/zero BN, as in the CIFAR ResNets of the KD benchmarks."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_normal_fan_out(model: nn.Module, *, linear_std: float | None = 0.01) -> None:
    """N(0, sqrt(2 / (k*k*out))) convolutions, unit/zero BN, zero linear bias (WRN/VGG/MobileNetV2 style).

    ``linear_std`` re-draws the linear weights from N(0, linear_std); None keeps PyTorch's default draw.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


def check_common_args(num_classes: int, in_chans: int) -> None:
    """Validate the arguments every zoo constructor takes."""
    for arg, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle ``(N, g*c, H, W) -> (N, c*g, H, W)``.

    ``reshape`` (not ``view``) so that channels_last inputs work; shapes come from the tensor so that
    torch.compile traces it without Python-side shape arithmetic on constants.
    """
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def flatten_pool(x: Tensor) -> Tensor:
    """Global average pool ``(N, C, H, W) -> (N, C)`` for any spatial size (8x8 digits as well as 32x32)."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
