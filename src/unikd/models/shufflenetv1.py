"""ShuffleNetV1 for CIFAR as used by the KD benchmarks ("ShuffleV1" in CRD/DKD).

Zhang et al., "ShuffleNet: An Extremely Efficient CNN for Mobile Devices" (CVPR 2018), groups g = 3, stage
widths 240/480/960 with 4/8/4 units, and the benchmark's CIFAR stem: a 1x1 convolution to 24 channels with
no stride and no max-pool. The first unit of each stage has stride 2 and concatenates a 3x3 average-pooled
shortcut; the first 1x1 group conv after the stem is not grouped (24 input channels). Module names follow the
benchmark's ``ShuffleNetv1.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import ZooModel, channel_shuffle, check_common_args, flatten_pool
from .factory import register_model

_STEM = 24


class ChannelShuffle(nn.Module):
    """Parameter-free channel shuffle with ``groups`` groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)


class ShuffleUnit(nn.Module):
    """1x1 group conv - shuffle - 3x3 depthwise - 1x1 group conv; add (stride 1) or concat (stride 2)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        g = 1 if in_planes == _STEM else groups
        self.conv1 = nn.Conv2d(in_planes, mid, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ChannelShuffle(g)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        out = self.shuffle1(out)
        out = nn.functional.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        out = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return nn.functional.relu(out)


class ShuffleNetV1(ZooModel):
    """CIFAR ShuffleNetV1.

    Args:
        out_planes: output channels of the three stages (divisible by ``groups`` and, minus the input, by 4).
        num_blocks: units per stage.
        groups: group count of the 1x1 group convolutions.
        num_classes: size of the classifier output.
        in_chans: input image channels.
    """

    def __init__(
        self,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_common_args(num_classes, in_chans)
        self.conv1 = nn.Conv2d(in_chans, _STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM)
        in_planes = _STEM
        for i, (planes, blocks) in enumerate(zip(out_planes, num_blocks)):
            units = []
            for j in range(blocks):
                # The stride-2 unit concatenates its input, so its branch produces only the difference.
                branch = planes - in_planes if j == 0 else planes
                units.append(ShuffleUnit(in_planes, branch, stride=2 if j == 0 else 1, groups=groups))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
        self.linear = nn.Linear(out_planes[2], num_classes)
        self._set_stages(("layer1", "layer2", "layer3"), tuple(out_planes))

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = nn.functional.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        logits = self.linear(flatten_pool(f3))
        return logits, [f1, f2, f3]


def shufflenetv1(num_classes: int = 100, in_chans: int = 3) -> ShuffleNetV1:
    """CIFAR ShuffleNetV1 of the KD benchmark (g = 3, widths 240/480/960, 4/8/4 units)."""
    return ShuffleNetV1(num_classes=num_classes, in_chans=in_chans)


register_model("shufflenetv1", shufflenetv1)
