"""Parameter counts of the zoo at num_classes=100.

Three independent checks: (1) the exact table in docs (EXPECTED); (2) a closed-form count computed here from
the layer configurations of the CRD/RepDistiller and DKD/mdistiller model files (not from our modules);
(3) the rounded figures published in the KD literature (CRD, Tian et al. ICLR 2020, and later tables).
"""

from __future__ import annotations

import pytest

from unikd.models import BENCHMARK_MODELS, create_model

EXPECTED = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "resnet18": 11_220_132,
    "resnet34": 21_328_292,
    "resnet50": 23_705_252,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "mobilenetv2": 812_836,
    "shufflenetv1": 949_258,
    "shufflenetv2": 1_355_528,
}

# Millions of parameters as commonly published for CIFAR-100 (2 decimals).
PUBLISHED_M = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_40_2": 2.26,
    "wrn_40_1": 0.57,
    "wrn_16_2": 0.70,
    "resnet56": 0.86,
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet110": 1.74,
    "resnet50": 23.71,
    "vgg13": 9.46,
    "mobilenetv2": 0.81,
    "shufflenetv1": 0.95,
    "shufflenetv2": 1.36,
}

K = 100  # classes


def _bn(c: int) -> int:
    return 2 * c


def _conv(cin: int, cout: int, k: int, groups: int = 1, bias: bool = False) -> int:
    return cin // groups * cout * k * k + (cout if bias else 0)


def _fc(cin: int) -> int:
    return cin * K + K


def _resnet_cifar(depth: int, w: tuple[int, int, int, int]) -> int:
    n = (depth - 2) // 6
    total, cin = _conv(3, w[0], 3) + _bn(w[0]), w[0]
    for stage, c in enumerate(w[1:]):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            total += _conv(cin, c, 3) + _conv(c, c, 3) + 2 * _bn(c)
            if stride != 1 or cin != c:
                total += _conv(cin, c, 1) + _bn(c)
            cin = c
    return total + _fc(w[3])


def _resnet_v2(blocks: tuple[int, ...], bottleneck: bool) -> int:
    total, cin = _conv(3, 64, 3) + _bn(64), 64
    exp = 4 if bottleneck else 1
    for stage, (planes, nb) in enumerate(zip((64, 128, 256, 512), blocks)):
        for i in range(nb):
            stride = 2 if stage > 0 and i == 0 else 1
            out = planes * exp
            if bottleneck:
                total += _conv(cin, planes, 1) + _conv(planes, planes, 3) + _conv(planes, out, 1)
                total += 2 * _bn(planes) + _bn(out)
            else:
                total += _conv(cin, planes, 3) + _conv(planes, planes, 3) + 2 * _bn(planes)
            if stride != 1 or cin != out:
                total += _conv(cin, out, 1) + _bn(out)
            cin = out
    return total + _fc(512 * exp)


def _wrn(depth: int, k: int) -> int:
    n = (depth - 4) // 6
    total, cin = _conv(3, 16, 3), 16
    for c in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(cin) + _conv(cin, c, 3) + _bn(c) + _conv(c, c, 3)
            if cin != c:
                total += _conv(cin, c, 1)
            cin = c
    return total + _bn(64 * k) + _fc(64 * k)


_VGG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _vgg(cfg: list[list[int]]) -> int:
    total, cin = 0, 3
    for block in cfg:
        for c in block:
            total += _conv(cin, c, 3, bias=True) + _bn(c)
            cin = c
    return total + _fc(512)


def _mobile_half() -> int:
    setting = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2)]
    setting.append((6, 320, 1, 1))
    cin = 16
    total = _conv(3, cin, 3) + _bn(cin)
    for t, c, n, _ in setting:
        c //= 2
        for _ in range(n):
            h = cin * t
            total += _conv(cin, h, 1) + _bn(h) + _conv(h, h, 3, groups=h) + _bn(h) + _conv(h, c, 1) + _bn(c)
            cin = c
    return total + _conv(cin, 1280, 1) + _bn(1280) + _fc(1280)


def _shufflev1() -> int:
    total, cin = _conv(3, 24, 1) + _bn(24), 24
    for out, nb in zip((240, 480, 960), (4, 8, 4)):
        for i in range(nb):
            branch = out - cin if i == 0 else out
            mid = branch // 4
            g = 1 if cin == 24 else 3
            total += _conv(cin, mid, 1, groups=g) + _bn(mid) + _conv(mid, mid, 3, groups=mid) + _bn(mid)
            total += _conv(mid, branch, 1, groups=3) + _bn(branch)
            cin = out
    return total + _fc(960)


def _shufflev2() -> int:
    total, cin = _conv(3, 24, 1) + _bn(24), 24
    for out, nb in zip((116, 232, 464), (3, 7, 3)):
        mid = out // 2
        total += _conv(cin, cin, 3, groups=cin) + _bn(cin) + _conv(cin, mid, 1) + _bn(mid)  # left branch
        total += _conv(cin, mid, 1) + _bn(mid) + _conv(mid, mid, 3, groups=mid) + _bn(mid)  # right branch
        total += _conv(mid, mid, 1) + _bn(mid)
        total += nb * (2 * (_conv(mid, mid, 1) + _bn(mid)) + _conv(mid, mid, 3, groups=mid) + _bn(mid))
        cin = out
    return total + _conv(464, 1024, 1) + _bn(1024) + _fc(1024)


def _closed_form(name: str) -> int:
    narrow, wide = (16, 16, 32, 64), (32, 64, 128, 256)
    if name == "resnet8x4":
        return _resnet_cifar(8, wide)
    if name == "resnet32x4":
        return _resnet_cifar(32, wide)
    if name in ("resnet18", "resnet34", "resnet50"):
        blocks = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}[name]
        return _resnet_v2(blocks, bottleneck=name == "resnet50")
    if name.startswith("resnet"):
        return _resnet_cifar(int(name[6:]), narrow)
    if name.startswith("wrn_"):
        _, depth, k = name.split("_")
        return _wrn(int(depth), int(k))
    if name in _VGG:
        return _vgg(_VGG[name])
    return {"mobilenetv2": _mobile_half, "shufflenetv1": _shufflev1, "shufflenetv2": _shufflev2}[name]()


def _count(name: str) -> int:
    return sum(p.numel() for p in create_model(name, num_classes=100).parameters())


def test_table_covers_the_whole_benchmark_zoo():
    assert sorted(EXPECTED) == sorted(BENCHMARK_MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_parameter_count(name):
    count = _count(name)
    assert count == EXPECTED[name]
    assert count == _closed_form(name)
    if name in PUBLISHED_M:
        assert round(count / 1e6, 2) == PUBLISHED_M[name]


def test_num_classes_only_changes_the_classifier():
    base = _count("resnet20")
    ten = sum(p.numel() for p in create_model("resnet20", num_classes=10).parameters())
    assert base - ten == 90 * 64 + 90
