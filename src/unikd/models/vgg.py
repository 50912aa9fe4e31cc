"""VGG with batch norm for CIFAR (Simonyan & Zisserman, ICLR 2015), as used by the CRD/DKD benchmarks.

Five blocks of 3x3 conv(+bias)-BN-ReLU layers; 2x2 max-pools after blocks 0, 1 and 2 (none after block 3 at
CIFAR resolution), global average pooling and a single linear classifier on 512 channels (no FC stack).
Configurations: vgg8 "S" (1-1-1-1-1 convs), vgg11 "A", vgg13 "B", vgg16 "D", vgg19 "E".

Each block's ``nn.Sequential`` is laid out ``conv, bn, relu, conv, bn, ...`` exactly like the benchmark's
``vgg.py`` so their checkpoints load; the block's final ReLU (applied functionally there) is a module here,
which adds no parameters and makes the block's output the post-activation stage feature.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import ZooModel, check_common_args, flatten_pool, init_normal_fan_out
from .factory import register_model

CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _make_block(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [
            nn.Conv2d(in_channels, w, kernel_size=3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        ]
        in_channels = w
    return nn.Sequential(*layers)


class VGG(ZooModel):
    """CIFAR VGG-BN.

    Args:
        cfg: convolution widths per block (5 blocks).
        num_classes: size of the classifier output.
        in_chans: input image channels.
    """

    def __init__(self, cfg: tuple[tuple[int, ...], ...], num_classes: int = 100, in_chans: int = 3) -> None:
        super().__init__()
        check_common_args(num_classes, in_chans)
        if len(cfg) != 5 or not all(cfg):
            raise ValueError(f"cfg must list 5 non-empty blocks of conv widths, got {cfg!r}")
        in_channels = in_chans
        for i, widths in enumerate(cfg):
            setattr(self, f"block{i}", _make_block(widths, in_channels))
            in_channels = widths[-1]
        # Three pools only: at 32x32 blocks 3 and 4 both run at 4x4 (the benchmark skips pool3 unless h=64).
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.classifier = nn.Linear(in_channels, num_classes)
        names = tuple(f"block{i}" for i in range(5))
        self._set_stages(names, tuple(w[-1] for w in cfg))
        init_normal_fan_out(self, linear_std=0.01)

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        f0 = self.block0(x)
        f1 = self.block1(self.pool0(f0))
        f2 = self.block2(self.pool1(f1))
        f3 = self.block3(self.pool2(f2))
        f4 = self.block4(f3)
        logits = self.classifier(flatten_pool(f4))
        return logits, [f0, f1, f2, f3, f4]


def _register(name: str) -> None:
    cfg = CONFIGS[name]

    def factory(num_classes: int = 100, in_chans: int = 3) -> VGG:
        return VGG(cfg, num_classes=num_classes, in_chans=in_chans)

    factory.__doc__ = f"CIFAR {name} with batch norm, conv widths per block {cfg}."
    register_model(name, factory)


for _name in CONFIGS:
    _register(_name)
