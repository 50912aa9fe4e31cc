"""ShuffleNetV2 (1x) for CIFAR as used by the KD benchmarks ("ShuffleV2" in CRD/DKD).

Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design" (ECCV 2018), widths
116/232/464 and a 1024-channel 1x1 conv before pooling, with the benchmark's CIFAR stem (a 1x1 conv to 24
channels, no stride, no max-pool). Each stage is one stride-2 down-sampling unit followed by 3/7/3 basic units
(so 4/8/4 units in all). Module names follow the benchmark's ``ShuffleNetv2.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import ZooModel, check_common_args, flatten_pool
from .factory import register_model
from .shufflenetv1 import ChannelShuffle

_STEM = 24


def _dw3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pw(inp: int, oup: int) -> nn.Conv2d:
    return nn.Conv2d(inp, oup, 1, bias=False)


class BasicUnit(nn.Module):
    """Split channels in half; transform the second half (1x1, 3x3 dw, 1x1); concat; shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split_at = channels // 2
        half = channels - self.split_at
        self.conv1 = _pw(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _dw3x3(half, 1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = _pw(half, half)
        self.bn3 = nn.BatchNorm2d(half)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.split_at], x[:, self.split_at :]
        out = nn.functional.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = nn.functional.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class DownUnit(nn.Module):
    """Stride-2 unit: both branches see the whole input (left: dw-pw; right: pw-dw-pw); concat; shuffle."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = _dw3x3(in_channels, 2)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = _pw(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _pw(in_channels, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _dw3x3(mid, 2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _pw(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        left = nn.functional.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = nn.functional.relu(self.bn3(self.conv3(x)))
        right = nn.functional.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(ZooModel):
    """CIFAR ShuffleNetV2.

    Args:
        out_channels: widths of the three stages and of the final 1x1 conv (even numbers).
        num_blocks: basic units per stage after the down-sampling unit.
        num_classes: size of the classifier output.
        in_chans: input image channels.
    """

    def __init__(
        self,
        out_channels: tuple[int, int, int, int] = (116, 232, 464, 1024),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        num_classes: int = 100,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_common_args(num_classes, in_chans)
        if any(c % 2 for c in out_channels[:3]):
            raise ValueError(f"out_channels of the stages must be even (split in halves), got {out_channels}")
        self.conv1 = nn.Conv2d(in_chans, _STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM)
        in_ch = _STEM
        for i, (ch, blocks) in enumerate(zip(out_channels[:3], num_blocks)):
            units: list[nn.Module] = [DownUnit(in_ch, ch)] + [BasicUnit(ch) for _ in range(blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
            in_ch = ch
        self.conv2 = nn.Conv2d(in_ch, out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        self._set_stages(("layer1", "layer2", "layer3"), tuple(out_channels[:3]))

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = nn.functional.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        out = nn.functional.relu(self.bn2(self.conv2(f3)))
        logits = self.linear(flatten_pool(out))
        return logits, [f1, f2, f3]


def shufflenetv2(num_classes: int = 100, in_chans: int = 3) -> ShuffleNetV2:
    """CIFAR ShuffleNetV2 1x of the KD benchmark (widths 116/232/464/1024, 3/7/3 basic units)."""
    return ShuffleNetV2(num_classes=num_classes, in_chans=in_chans)


register_model("shufflenetv2", shufflenetv2)
