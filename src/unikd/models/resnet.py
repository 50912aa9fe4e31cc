"""CIFAR-style ResNet18/34/50: the ImageNet ResNets (He et al., CVPR 2016) with a 3x3 stride-1 stem and no
max-pool, four stages of widths 64/128/256/512 (x4 for the bottleneck ResNet50).

These are the "ResNet18"/"ResNet50" of the CIFAR-100 KD benchmark (CRD/RepDistiller ``resnetv2.py``, DKD);
module names match those files so their checkpoints load directly.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import ZooModel, check_common_args, flatten_pool, init_kaiming_fan_out
from .factory import register_model


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    # An empty Sequential is the identity and adds no state_dict keys.
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return nn.functional.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        out = nn.functional.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return nn.functional.relu(out + self.shortcut(x))


class ResNet(ZooModel):
    """CIFAR-style ResNet with four stages.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        num_blocks: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet18.
        num_classes: size of the classifier output.
        in_chans: input image channels.
        zero_init_residual: start each residual branch at zero (last BN weight = 0; Goyal et al. 2017).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 100,
        in_chans: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check_common_args(num_classes, in_chans)
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        widths = (64, 128, 256, 512)
        for i, (planes, blocks) in enumerate(zip(widths, num_blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(blocks):
                layers.append(block(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self._set_stages(("layer1", "layer2", "layer3", "layer4"), tuple(w * block.expansion for w in widths))
        init_kaiming_fan_out(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = nn.functional.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        logits = self.linear(flatten_pool(f4))
        return logits, [f1, f2, f3, f4]


def _register(name: str, block: type[BasicBlock] | type[Bottleneck], num_blocks: tuple[int, int, int, int]):
    def factory(num_classes: int = 100, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
        return ResNet(block, num_blocks, num_classes, in_chans, zero_init_residual)

    factory.__doc__ = f"CIFAR-style {name}: {block.__name__} x {num_blocks}, 3x3 stride-1 stem, no max-pool."
    register_model(name, factory)


_register("resnet18", BasicBlock, (2, 2, 2, 2))
_register("resnet34", BasicBlock, (3, 4, 6, 3))
_register("resnet50", Bottleneck, (3, 4, 6, 3))
