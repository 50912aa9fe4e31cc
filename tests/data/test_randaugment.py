"""RandAugment (timm's rand-mM-... variant): op sampling against timm's level functions, and every op against
a per-sample reference written from the PIL definitions it follows (loops over pixels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unikd.data import hashing
from unikd.data.randaugment import OPS, RandAugmentSpec, apply_op, fill_from_mean, rand_augment, sample_ops

FILL = torch.tensor([10, 20, 30], dtype=torch.uint8)


def images(b: int = 4, h: int = 7, w: int = 9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
    x[0, :, :2] = 7  # a flat region, and one image with a narrow value range (AutoContrast / Equalize)
    x[1] = x[1] // 4 + 60
    return x


def blend_ref(deg: np.ndarray, img: np.ndarray, f: float) -> np.ndarray:
    out = deg.astype(np.float32) + np.float32(f) * (img.astype(np.float32) - deg.astype(np.float32))
    return np.trunc(np.clip(out, 0, 255)).astype(np.uint8)


def grey_ref(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[k].astype(np.int64) for k in range(3))
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def affine_ref(img: np.ndarray, m: tuple[float, ...], fill: np.ndarray) -> np.ndarray:
    c, h, w = img.shape
    out = np.empty_like(img)
    for y in range(h):
        for x in range(w):
            sx = m[0] * (x + 0.5) + m[1] * (y + 0.5) + m[2]
            sy = m[3] * (x + 0.5) + m[4] * (y + 0.5) + m[5]
            ix, iy = math.floor(sx), math.floor(sy)
            out[:, y, x] = img[:, iy, ix] if 0 <= ix < w and 0 <= iy < h else fill
    return out


def rotate_matrix(deg: float, w: int, h: int) -> tuple[float, ...]:
    """PIL Image.rotate's inverse matrix about the centre."""
    a = -math.radians(deg % 360.0)
    cos, sin = round(math.cos(a), 15), round(math.sin(a), 15)
    cx, cy = w / 2.0, h / 2.0
    return (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)


def op_ref(name: str, img: np.ndarray, arg: float, fill: np.ndarray) -> np.ndarray:
    c, h, w = img.shape
    lut = None
    if name == "Invert":
        lut = [255 - i for i in range(256)]
    elif name == "Posterize":
        mask = ~(2 ** (8 - int(arg)) - 1) & 0xFF
        lut = [i & mask for i in range(256)]
    elif name == "Solarize":
        lut = [i if i < arg else 255 - i for i in range(256)]
    elif name == "SolarizeAdd":
        lut = [min(255, i + int(arg)) if i < 128 else i for i in range(256)]
    if lut is not None:
        return np.array(lut, dtype=np.uint8)[img]
    if name == "AutoContrast":
        out = img.copy()
        for k in range(c):
            lo, hi = int(img[k].min()), int(img[k].max())
            if hi > lo:
                scale = 255.0 / (hi - lo)
                table = [min(255, max(0, int(i * scale - lo * scale))) for i in range(256)]
                out[k] = np.array(table, dtype=np.uint8)[img[k]]
        return out
    if name == "Equalize":
        out = img.copy()
        for k in range(c):
            hist = np.bincount(img[k].ravel(), minlength=256)
            used = [v for v in hist if v]
            if len(used) <= 1:
                continue
            step = (sum(used) - used[-1]) // 255
            if not step:
                continue
            n, table = step // 2, []
            for i in range(256):
                table.append(min(255, n // step))
                n += int(hist[i])
            out[k] = np.array(table, dtype=np.uint8)[img[k]]
        return out
    if name == "Brightness":
        return blend_ref(np.zeros_like(img), img, arg)
    if name == "Color":
        return blend_ref(np.broadcast_to(grey_ref(img), img.shape), img, arg)
    if name == "Contrast":
        mean = int(grey_ref(img).mean() + 0.5)
        return blend_ref(np.full(img.shape, mean), img, arg)
    if name == "Sharpness":
        deg = img.copy()
        for k in range(c):
            for y in range(1, h - 1):
                for x in range(1, w - 1):
                    s = int(img[k, y - 1 : y + 2, x - 1 : x + 2].astype(np.int64).sum()) + 4 * int(
                        img[k, y, x]
                    )
                    deg[k, y, x] = np.round(np.float32(s) / np.float32(13.0))
        return blend_ref(deg, img, arg)
    m = {
        "ShearX": (1, arg, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, arg, 1, 0),
        "TranslateXRel": (1, 0, arg, 0, 1, 0),
        "TranslateYRel": (1, 0, 0, 0, 1, arg),
    }.get(name) or rotate_matrix(arg, w, h)
    return affine_ref(img, m, fill)


ARGS = {
    "Invert": [0.0],
    "Posterize": [0, 1, 4, 8],
    "Solarize": [0, 100, 256],
    "SolarizeAdd": [0, 99],
    "AutoContrast": [0.0],
    "Equalize": [0.0],
    "Brightness": [0.1, 1.7],
    "Color": [0.1, 1.9],
    "Contrast": [0.3, 1.5],
    "Sharpness": [0.1, 1.9],
    "ShearX": [-0.27, 0.3],
    "ShearY": [0.2],
    "TranslateXRel": [-3.6, 2.0],
    "TranslateYRel": [2.7],
    "Rotate": [-27.0, 13.5, 30.0],
}


@pytest.mark.parametrize("name", OPS)
def test_each_op_matches_its_per_sample_reference(name):
    assert set(ARGS) == set(OPS)
    x = images()
    for arg in ARGS[name]:
        got = apply_op(name, x, torch.full((x.shape[0],), float(arg), dtype=torch.float64), FILL)
        for k in range(x.shape[0]):
            want = op_ref(name, x[k].numpy(), arg, FILL.numpy())
            assert np.array_equal(got[k].numpy(), want), (name, arg, k)


def level_ref(name: str, level: float, increasing: bool, w: int, h: int, negate: bool) -> float:
    """timm auto_augment level-to-argument functions (_LEVEL_DENOM = 10)."""
    f = level / 10
    sign = -1 if negate else 1
    return {
        "Rotate": sign * f * 30,
        "ShearX": sign * f * 0.3,
        "ShearY": sign * f * 0.3,
        "TranslateXRel": sign * f * 0.45 * w,
        "TranslateYRel": sign * f * 0.45 * h,
        "Posterize": (4 - int(f * 4)) if increasing else int(f * 4),
        "Solarize": (256 - min(256, int(f * 256))) if increasing else min(256, int(f * 256)),
        "SolarizeAdd": min(128, int(f * 110)),
        **{
            e: (max(0.1, 1.0 + sign * f * 0.9) if increasing else f * 1.8 + 0.1)
            for e in ("Color", "Contrast", "Brightness", "Sharpness")
        },
    }.get(name, 0.0)


@pytest.mark.parametrize("text", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-p0.8", "rand-m9-mstd101"])
def test_sampled_ops_follow_timm_level_functions(text):
    spec = RandAugmentSpec.parse(text)
    idx = torch.arange(300)
    layers = sample_ops(spec, 3, 2, idx, 20, 10)
    assert len(layers) == spec.layers
    applied = 0
    for layer, (op, arg) in enumerate(layers):
        base = hashing.RAND_AUGMENT + 8 * layer
        for i in range(300):
            one = torch.tensor([i])
            k = int(hashing.hash_u32(3, 2, base, one)[0]) % len(OPS)
            on = float(hashing.uniform(3, 2, base + 1, one)[0]) < spec.prob
            assert int(op[i]) == (k if on else -1)
            if not on:
                continue
            applied += 1
            level = spec.magnitude
            if spec.magnitude_std > 100:
                level = float(hashing.uniform(3, 2, base + 2, one)[0]) * spec.magnitude
            elif spec.magnitude_std > 0:
                level += spec.magnitude_std * float(hashing._normal(3, 2, [base + 2], one)[0, 0])
            level = min(10.0, max(0.0, level))
            negate = float(hashing.uniform(3, 2, base + 4, one)[0]) > 0.5
            want = level_ref(OPS[k], level, spec.increasing, 20, 10, negate)
            assert float(arg[i]) == pytest.approx(want, abs=1e-9), (OPS[k], level)
    assert abs(applied / (300 * spec.layers) - spec.prob) < 0.1


def test_rand_augment_is_per_sample_and_spec_errors():
    x = images(b=6)
    ops = sample_ops(RandAugmentSpec.parse("rand-m9-mstd0.5-inc1"), 0, 0, torch.arange(6), 9, 7)
    fill = fill_from_mean((0.485, 0.456, 0.406))
    out = rand_augment(x, ops, fill)
    assert not torch.equal(out, x)
    for k in range(6):  # the batch result equals each sample augmented alone
        alone = rand_augment(x[k : k + 1], [(op[k : k + 1], arg[k : k + 1]) for op, arg in ops], fill)
        assert torch.equal(alone[0], out[k])
    assert fill_from_mean((0.485, 0.456, 0.406)).tolist() == [124, 116, 104]
    for bad, match in (
        ("rand-n2", "magnitude"),
        ("rand-x9", "unknown part"),
        ("auto-m9", "timm's syntax"),
        ("rand-m9-p1.5", "p in"),
    ):
        with pytest.raises(ValueError, match=match):
            RandAugmentSpec.parse(bad)
