"""``tiny_cnn``: a very small CNN for demos, smoke tests and CI. Not part of the benchmark zoo."""

from __future__ import annotations

from torch import Tensor, nn

from ._base import ZooModel, check_common_args, flatten_pool, init_kaiming_fan_out
from .factory import register_model


def _stage(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class TinyCNN(ZooModel):
    """Three conv-BN-ReLU stages (``width``, 2x, 4x channels; strides 1, 2, 2), global pool, linear.

    With the default ``width=16`` it has about 25k parameters and runs on any input of at least 1x1 pixel
    (8x8 digits, 28x28 MNIST, 32x32 CIFAR).
    """

    def __init__(self, num_classes: int = 100, in_chans: int = 3, width: int = 16) -> None:
        super().__init__()
        check_common_args(num_classes, in_chans)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        widths = (width, 2 * width, 4 * width)
        self.stage1 = _stage(in_chans, widths[0], 1)
        self.stage2 = _stage(widths[0], widths[1], 2)
        self.stage3 = _stage(widths[1], widths[2], 2)
        self.fc = nn.Linear(widths[2], num_classes)
        self._set_stages(("stage1", "stage2", "stage3"), widths)
        init_kaiming_fan_out(self)

    def _forward_impl(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        return self.fc(flatten_pool(f3)), [f1, f2, f3]


def tiny_cnn(num_classes: int = 100, in_chans: int = 3, width: int = 16) -> TinyCNN:
    """A ~25k-parameter CNN for demos and tests (not a benchmark architecture)."""
    return TinyCNN(num_classes=num_classes, in_chans=in_chans, width=width)


register_model("tiny_cnn", tiny_cnn)
