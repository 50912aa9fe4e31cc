"""MobileNetV2 for CIFAR as used by the KD benchmarks (CRD ``mobile_half``; "MobileNetV2" in DKD).

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018), with the benchmark's
CIFAR changes: width multiplier 0.5, expansion 6, a stride-2 3x3 stem and stride 1 in the 24-channel stage
(so a 32x32 image ends at 2x2), every inverted residual with its 1x1 expansion conv (also for t = 1), and a
1280-channel 1x1 conv before pooling. Module names follow the benchmark's ``mobilenetv2.py``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import ZooModel, check_common_args, flatten_pool, init_normal_fan_out
from .factory import register_model

# (expansion t, channels c, repeats n, first stride s) for each of the seven block groups.
_SETTING = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Stage outputs (the benchmark's feature maps) are the outputs of these block groups.
_STAGE_GROUPS = (1, 2, 4, 6)


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; residual when stride 1 and shape unchanged."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(ZooModel):
    """CIFAR MobileNetV2.

    Args:
        expansion: expansion ratio T of all groups but the first (6 in the benchmark).
        width_mult: channel multiplier (0.5 for ``mobile_half``).
        num_classes: size of the classifier output.
        in_chans: input image channels.
    """

    def __init__(
        self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100, in_chans: int = 3
    ):
        super().__init__()
        check_common_args(num_classes, in_chans)
        if expansion < 1 or width_mult <= 0:
            raise ValueError(f"expansion must be >= 1 and width_mult > 0, got {expansion}, {width_mult}")
        in_ch = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_chans, in_ch, 3, 2)
        self.blocks = nn.ModuleList()
        group_channels = []
        for t, c, n, s in _SETTING:
            out_ch = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(
                    InvertedResidual(in_ch, out_ch, s if i == 0 else 1, expansion if t is None else t)
                )
                in_ch = out_ch
            self.blocks.append(nn.Sequential(*layers))
            group_channels.append(out_ch)
        # The benchmark keeps 1280 channels for width multipliers <= 1.
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_ch, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self._set_stages(
            tuple(f"blocks.{g}" for g in _STAGE_GROUPS), tuple(group_channels[g] for g in _STAGE_GROUPS)
        )
        init_normal_fan_out(self, linear_std=0.01)

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.conv1(x)
        features = []
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in _STAGE_GROUPS:
                features.append(x)
        logits = self.classifier(flatten_pool(self.conv2(x)))
        return logits, features


def mobilenetv2(num_classes: int = 100, in_chans: int = 3, width_mult: float = 0.5, expansion: int = 6):
    """CIFAR MobileNetV2 of the KD benchmark (``mobile_half``: width 0.5, expansion 6)."""
    return MobileNetV2(expansion, width_mult, num_classes=num_classes, in_chans=in_chans)


register_model("mobilenetv2", mobilenetv2)
