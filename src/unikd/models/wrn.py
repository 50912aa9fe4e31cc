"""Wide ResNets (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016): WRN-d-k for CIFAR.

Pre-activation basic blocks, a 16-channel 3x3 stem, three groups of ``n = (d - 4) / 6`` blocks with widths
16k/32k/64k (stride 2 at groups 2 and 3), then BN-ReLU, global pooling and the classifier. The benchmark
names are wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2 (CRD/DKD). Module names follow the benchmark's ``wrn.py`` so
its checkpoints load directly.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import ZooModel, check_common_args, flatten_pool, init_normal_fan_out
from .factory import register_model


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes and stride == 1
        # camelCase name kept from the reference file for checkpoint compatibility.
        self.convShortcut: nn.Module | None = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # Not in-place: x itself is the identity shortcut.
        act = nn.functional.relu(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = nn.functional.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # When the shape changes, the projection sees the pre-activated input (as in the original WRN code).
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of ``n`` wide basic blocks; the first one carries the stride and the width change."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate
                )
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(ZooModel):
    """WRN-depth-widen_factor for CIFAR.

    Args:
        depth: ``6n + 4`` (16, 22, 28, 40, ...).
        widen_factor: width multiplier k of the three groups (16k, 32k, 64k).
        num_classes: size of the classifier output.
        in_chans: input image channels.
        drop_rate: dropout probability between the two convolutions of each block (0 in the benchmark).
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_common_args(num_classes, in_chans)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (e.g. 16, 28, 40), got {depth}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self._set_stages(("block1", "block2", "block3"), widths[1:])
        # The reference keeps PyTorch's default draw for the linear weight and zeroes its bias.
        init_normal_fan_out(self, linear_std=None)

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.conv1(x)
        f1 = self.block1(x)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        logits = self.fc(flatten_pool(self.relu(self.bn1(f3))))
        return logits, [f1, f2, f3]


def _register(depth: int, k: int) -> None:
    def factory(num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0) -> WideResNet:
        return WideResNet(depth, k, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)

    factory.__doc__ = f"WRN-{depth}-{k} for CIFAR."
    register_model(f"wrn_{depth}_{k}", factory)


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _k)
