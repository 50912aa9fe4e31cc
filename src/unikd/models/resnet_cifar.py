"""CIFAR ResNets of the KD benchmarks: resnet8..110 (widths 16/32/64) and resnet8x4/resnet32x4 (64/128/256).

Architecture as in He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2, with
the widths and depths of the CIFAR-100 KD benchmark (CRD, Tian et al. ICLR 2020; DKD, Zhao et al. CVPR 2022):
a 3x3 stem, three stages of ``n = (depth - 2) / 6`` basic blocks, stride 2 at stages 2 and 3, and a 1x1
convolution + BN projection shortcut wherever the shape changes.

Module names follow the benchmark's model files so that their CIFAR-100 teacher checkpoints load with
``model.load_state_dict(ckpt["model"])``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import ZooModel, check_common_args, flatten_pool, init_kaiming_fan_out
from .factory import register_model


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN, add the shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(ZooModel):
    """CIFAR ResNet with ``depth = 6n + 2`` and stage widths ``widths = (stem, stage1, stage2, stage3)``.

    Args:
        depth: total number of weighted layers, ``6n + 2`` (8, 14, 20, 32, 44, 56, 110).
        widths: channels of the stem and of the three stages, e.g. ``(16, 16, 32, 64)``.
        num_classes: size of the classifier output.
        in_chans: input image channels (3 for CIFAR, 1 for digits/MNIST).
    """

    def __init__(
        self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100, in_chans: int = 3
    ) -> None:
        super().__init__()
        check_common_args(num_classes, in_chans)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (e.g. 8, 20, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[0], widths[1], n, stride=1)
        self.layer2 = self._make_layer(widths[1], widths[2], n, stride=2)
        self.layer3 = self._make_layer(widths[2], widths[3], n, stride=2)
        # Adaptive (not a fixed 8x8 pool) so that small inputs such as 8x8 digits work too.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self._set_stages(("layer1", "layer2", "layer3"), tuple(widths[1:]))
        init_kaiming_fan_out(self)

    @staticmethod
    def _make_layer(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        logits = self.fc(flatten_pool(f3))
        return logits, [f1, f2, f3]


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    def factory(num_classes: int = 100, in_chans: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes=num_classes, in_chans=in_chans)

    factory.__doc__ = f"CIFAR ResNet, depth {depth}, stage widths {widths[1:]}."
    register_model(name, factory)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, _NARROW)
_register("resnet8x4", 8, _WIDE)
_register("resnet32x4", 32, _WIDE)
