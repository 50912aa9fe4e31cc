"""unikd's ImageNet views and RandAugment ops against the libraries they follow: torchvision's functional
resized_crop / resize + center_crop, and timm's PIL RandAugment ops (nearest resampling for the geometric
ones, since unikd's geometric ops take the nearest pixel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unikd.data import hashing
from unikd.data.randaugment import OPS, apply_op
from unikd.data.resample import center_views, rrc_params, rrc_views


def _close(a: torch.Tensor, b: torch.Tensor, frac: float = 0.05) -> None:
    """Equal up to +-1 from rounding; at most ``frac`` of the values differ at all."""
    b = b.round().clamp(0, 255).to(torch.uint8) if b.is_floating_point() else b
    d = (a.int() - b.int()).abs()
    assert int(d.max()) <= 1 and float((d > 0).float().mean()) <= frac


def test_views_match_torchvision_functional():
    from torchvision.transforms.v2 import functional as TF

    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((37, 53), (64, 48))]
    for img in imgs:
        idx = torch.arange(20)
        box = rrc_params(1, 2, idx, img.shape[1], img.shape[2], (0.08, 1.0), (3 / 4, 4 / 3))
        flip = hashing.uniform(1, 2, hashing.FLIP, idx) < 0.5
        ours = rrc_views([img] * 20, box, flip, 24)
        for k in range(20):
            t, l, h, w = (int(v[k]) for v in box)
            for src, frac in (
                (img.float(), 0.05),
                (img, 1.0),
            ):  # torchvision's uint8 kernel rounds its own way
                ref = TF.resized_crop(src, t, l, h, w, [24, 24], antialias=True)
                _close(ours[k], TF.horizontal_flip(ref) if flip[k] else ref, frac)
        for src, frac in ((img.float(), 0.05), (img, 1.0)):
            _close(
                center_views([img], 28, 24)[0],
                TF.center_crop(TF.resize(src, 28, antialias=True), [24, 24]),
                frac,
            )


PIL_OPS = {
    "AutoContrast": [None],
    "Equalize": [None],
    "Invert": [None],
    "Posterize": [1, 4],
    "Solarize": [100],
    "SolarizeAdd": [60],
    "Brightness": [0.3, 1.6],
    "Color": [0.2, 1.8],
    "Contrast": [0.4, 1.7],
    "Sharpness": [0.2, 1.8],
    "ShearX": [0.23],
    "ShearY": [-0.27],
    "TranslateXRel": [0.21],
    "TranslateYRel": [-0.31],
    "Rotate": [20.0],
}


@pytest.mark.parametrize("name", OPS)
def test_randaugment_ops_match_timm_pil_ops(name):
    from PIL import Image
    from timm.data import auto_augment as aa

    fn = {
        "Posterize": aa.posterize,
        "Solarize": aa.solarize,
        "SolarizeAdd": aa.solarize_add,
        "AutoContrast": aa.auto_contrast,
        "Equalize": aa.equalize,
        "Invert": aa.invert,
        "Brightness": aa.brightness,
        "Color": aa.color,
        "Contrast": aa.contrast,
        "Sharpness": aa.sharpness,
        "ShearX": aa.shear_x,
        "ShearY": aa.shear_y,
        "TranslateXRel": aa.translate_x_rel,
        "TranslateYRel": aa.translate_y_rel,
        "Rotate": aa.rotate,
    }[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (2, 3, 20, 24), generator=g, dtype=torch.uint8)
    x[1] = x[1] // 3 + 50
    fill = torch.tensor([124, 116, 104], dtype=torch.uint8)
    for value in PIL_OPS[name]:
        for k in range(2):
            pil = Image.fromarray(x[k].permute(1, 2, 0).numpy())
            args = () if value is None else (value,)
            if name in ("ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "Rotate"):
                want = fn(pil, *args, resample=Image.NEAREST, fillcolor=tuple(fill.tolist()))
                arg = (
                    value * (24 if name == "TranslateXRel" else 20) if name.startswith("Translate") else value
                )
            else:
                want = fn(pil, *args)
                arg = 0.0 if value is None else value
            want_t = torch.from_numpy(np.array(want)).permute(2, 0, 1)
            got = apply_op(name, x[k : k + 1], torch.tensor([float(arg)], dtype=torch.float64), fill)[0]
            # LUT and blend ops agree exactly; smoothing and geometric ops up to rounding at edges.
            frac = 0.0 if name not in ("Sharpness", "Rotate", "ShearX", "ShearY") else 0.05
            d = (got.int() - want_t.int()).abs()
            assert float((d > 1).float().mean()) <= frac, (name, value, k)
