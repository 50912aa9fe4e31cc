"""RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced search
space", CVPR-W 2020) in the variant of timm's ``rand_augment_transform`` that the DeiT recipes use
(``rand-m9-mstd0.5-inc1``), on uint8 batches on the training device.

Spec string (timm's syntax): ``rand-m{M}-n{N}-mstd{S}-inc{0|1}-p{P}``; defaults n=2, p=0.5, mstd=0,
inc=0, M required. Per sample and layer: one of 15 ops drawn uniformly (with replacement), applied with
probability P, at magnitude ``clip(M + S * normal, 0, 10)`` (S > 100: uniform in [0, M]) mapped to the op's
argument by timm's level functions (signed ops flip the sign with probability 1/2). Every random number
comes from :mod:`unikd.data.hashing`, so the ops of sample i at epoch e are a pure function of
(seed, e, i).

Pixel semantics (each op returns uint8, as PIL does): geometric ops (Rotate, ShearX/Y, TranslateX/YRel)
map each output pixel centre through PIL's affine matrix to the source and take the nearest pixel (timm's
PIL ops interpolate bicubic/bilinear), filling outside with ``fill``; enhancement ops blend with PIL's
degenerate image (grey L = (19595 R + 38470 G + 7471 B + 2^15) >> 16; contrast: its rounded mean; sharpness:
the 3x3 SMOOTH filter, borders kept) and truncate like PIL's ``Image.blend``; AutoContrast, Equalize,
Posterize, Solarize, SolarizeAdd and Invert follow PIL's ``ImageOps`` look-up tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unikd.data import hashing

OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
ENHANCE = {"Color", "Contrast", "Brightness", "Sharpness"}
LEVEL_MAX = 10.0


@dataclass(frozen=True)
class RandAugmentSpec:
    magnitude: float
    layers: int = 2
    magnitude_std: float = 0.0
    increasing: bool = False
    prob: float = 0.5

    @classmethod
    def parse(cls, text: str) -> RandAugmentSpec:
        parts = str(text).split("-")
        if parts[0] != "rand" or len(parts) < 2:
            raise ValueError(
                f"randaugment {text!r}: expected timm's syntax, e.g. 'rand-m9-mstd0.5-inc1' "
                "(keys m, n, mstd, inc, p)"
            )
        kw: dict[str, float] = {}
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|inc|m|n|p)(\d+(?:\.\d+)?)", part)
            if m is None:
                raise ValueError(
                    f"randaugment {text!r}: unknown part {part!r}; known keys: m, n, mstd, inc, p"
                )
            kw[m.group(1)] = float(m.group(2))
        if "m" not in kw:
            raise ValueError(f"randaugment {text!r}: give the magnitude, e.g. 'rand-m9-mstd0.5-inc1'")
        spec = cls(
            kw["m"], int(kw.get("n", 2)), kw.get("mstd", 0.0), bool(kw.get("inc", 0)), kw.get("p", 0.5)
        )
        if spec.layers < 1 or not 0 <= spec.prob <= 1:
            raise ValueError(f"randaugment {text!r}: n must be >= 1 and p in [0, 1]")
        return spec


def _level_to_arg(op: str, level: np.ndarray, increasing: bool, width: int, height: int) -> np.ndarray:
    """timm's level functions (``auto_augment.py``), vectorised; ``level`` in [0, 10], unsigned."""
    f = level / LEVEL_MAX
    if op == "Rotate":
        return f * 30.0
    if op in ("ShearX", "ShearY"):
        return f * 0.3
    if op == "TranslateXRel":
        return f * 0.45 * width
    if op == "TranslateYRel":
        return f * 0.45 * height
    if op == "Posterize":
        return 4 - np.floor(f * 4) if increasing else np.floor(f * 4)  # bits kept
    if op == "Solarize":
        t = np.minimum(256, np.floor(f * 256))
        return 256 - t if increasing else t
    if op == "SolarizeAdd":
        return np.minimum(128, np.floor(f * 110))
    if op in ENHANCE:
        return f * 0.9 if increasing else f * 1.8 + 0.1  # increasing: 1 +- this (sign drawn later)
    return np.zeros_like(level)


def sample_ops(
    spec: RandAugmentSpec, seed: int, epoch: int, index: torch.Tensor, width: int, height: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (op id int64 (B,) with -1 for "not applied", argument float64 (B,))."""
    out = []
    for layer in range(spec.layers):
        base = hashing.RAND_AUGMENT + 8 * layer
        op = hashing._u32(seed, epoch, base, index).astype(np.int64) % len(OPS)
        applied = hashing._uniform(seed, epoch, base + 1, index) < spec.prob
        level = np.full(op.shape, float(spec.magnitude))
        if spec.magnitude_std > 100:
            level = hashing._uniform(seed, epoch, base + 2, index) * spec.magnitude
        elif spec.magnitude_std > 0:
            level = level + spec.magnitude_std * hashing._normal(seed, epoch, [base + 2], index)[0]
        level = np.clip(level, 0.0, LEVEL_MAX)
        negate = hashing._uniform(seed, epoch, base + 4, index) > 0.5
        arg = np.zeros(op.shape)
        for k, name in enumerate(OPS):
            sel = op == k
            if sel.any():
                a = _level_to_arg(name, level[sel], spec.increasing, width, height)
                if name in SIGNED:
                    a = np.where(negate[sel], -a, a)
                elif name in ENHANCE and spec.increasing:
                    a = np.maximum(0.1, 1.0 + np.where(negate[sel], -a, a))
                arg[sel] = a
        out.append((torch.from_numpy(np.where(applied, op, -1)), torch.from_numpy(arg)))
    return out


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, image, factor)``: float32 ``d + f (x - d)``, clipped, truncated."""
    d = degenerate.to(torch.float32)
    f = factor.to(torch.float32).view(-1, 1, 1, 1)
    return (d + f * (x.to(torch.float32) - d)).clamp_(0, 255).trunc_().to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L conversion (integer), as int64 (B, 1, H, W); grayscale input is returned as is."""
    if x.shape[1] == 1:
        return x.to(torch.int64)
    r, g, b = x[:, 0:1].to(torch.int64), x[:, 1:2].to(torch.int64), x[:, 2:3].to(torch.int64)
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def _affine(x: torch.Tensor, mats: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Nearest-pixel affine warp: output centre (u, v) reads source (a u + b v + c, d u + e v + f)."""
    b, c, h, w = x.shape
    dev = x.device
    m = mats.to(dev, torch.float64)
    u = torch.arange(w, device=dev, dtype=torch.float64)[None, None, :] + 0.5
    v = torch.arange(h, device=dev, dtype=torch.float64)[None, :, None] + 0.5
    sx = m[:, 0, None, None] * u + m[:, 1, None, None] * v + m[:, 2, None, None]  # (B, H, W)
    sy = m[:, 3, None, None] * u + m[:, 4, None, None] * v + m[:, 5, None, None]
    ix, iy = torch.floor(sx), torch.floor(sy)
    valid = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    flat = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).to(torch.int64).view(b, 1, h * w)
    out = x.reshape(b, c, h * w).gather(2, flat.expand(b, c, h * w)).view(b, c, h, w)
    return torch.where(valid[:, None], out, fill.to(dev, torch.uint8).view(1, c, 1, 1))


def _matrices(name: str, arg: torch.Tensor, h: int, w: int) -> torch.Tensor:
    a = arg.to(torch.float64)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    if name == "ShearX":
        return torch.stack([one, a, zero, zero, one, zero], 1)
    if name == "ShearY":
        return torch.stack([one, zero, zero, a, one, zero], 1)
    if name == "TranslateXRel":
        return torch.stack([one, zero, a, zero, one, zero], 1)
    if name == "TranslateYRel":
        return torch.stack([one, zero, zero, zero, one, a], 1)
    # Rotate: PIL's Image.rotate matrix about the centre (w/2, h/2), cos/sin rounded to 15 digits.
    ang = -torch.deg2rad(torch.remainder(a, 360.0))
    cos = torch.round(torch.cos(ang) * 1e15) / 1e15
    sin = torch.round(torch.sin(ang) * 1e15) / 1e15
    cx, cy = w / 2.0, h / 2.0
    return torch.stack([cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy], 1)


def apply_op(name: str, x: torch.Tensor, arg: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Op ``name`` on uint8 (B, C, H, W) with per-sample arguments ``arg`` (B,)."""
    b, c, h, w = x.shape
    dev = x.device
    arg = arg.to(dev)
    if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        return _affine(x, _matrices(name, arg, h, w), fill)
    if name == "Invert":
        return 255 - x
    if name == "Posterize":
        bits = arg.to(torch.int64).clamp(0, 8).view(-1, 1, 1, 1)
        mask = (255 - ((1 << (8 - bits)) - 1)).to(torch.uint8)
        return x & mask
    if name == "Solarize":
        return torch.where(x.to(torch.int64) < arg.view(-1, 1, 1, 1), x, 255 - x)
    if name == "SolarizeAdd":
        add = arg.to(torch.int64).view(-1, 1, 1, 1)
        return torch.where(x < 128, (x.to(torch.int64) + add).clamp(max=255).to(torch.uint8), x)
    if name == "Brightness":
        return _blend(torch.zeros_like(x), x, arg)
    if name == "Color":
        return _blend(_grey(x).expand(b, c, h, w), x, arg)
    if name == "Contrast":
        mean = torch.floor(_grey(x).to(torch.float64).mean(dim=(1, 2, 3)) + 0.5)
        return _blend(mean.view(-1, 1, 1, 1).expand(b, c, h, w), x, arg)
    if name == "Sharpness":
        k = torch.ones(1, 1, 3, 3, dtype=torch.float32, device=dev)
        k[0, 0, 1, 1] = 5.0
        smooth = F.conv2d(x.reshape(b * c, 1, h, w).to(torch.float32), k).div_(13.0).round_()
        degenerate = x.clone()
        degenerate[:, :, 1:-1, 1:-1] = smooth.view(b, c, h - 2, w - 2).to(torch.uint8)
        return _blend(degenerate, x, arg)
    if name == "AutoContrast":
        lo = x.amin(dim=(2, 3), keepdim=True).to(torch.float64)
        hi = x.amax(dim=(2, 3), keepdim=True).to(torch.float64)
        # tensor / tensor: a scalar numerator would be computed as a reciprocal product (off by one ulp)
        scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1)
        out = torch.trunc(x.to(torch.float64) * scale - lo * scale).clamp(0, 255).to(torch.uint8)
        return torch.where(hi > lo, out, x)
    if name == "Equalize":
        flat = x.reshape(b * c, h * w).to(torch.int64)
        hist = torch.zeros(b * c, 256, dtype=torch.int64, device=dev).scatter_add_(
            1, flat, torch.ones_like(flat)
        )
        last = 255 - torch.argmax((hist.flip(1) > 0).to(torch.int64), dim=1, keepdim=True)
        step = (h * w - hist.gather(1, last)) // 255  # (BC, 1)
        before = torch.cumsum(hist, 1) - hist  # pixels below each value
        lut = ((step // 2 + before) // step.clamp(min=1)).clamp(max=255)
        ok = (step > 0) & ((hist > 0).sum(1, keepdim=True) > 1)
        out = lut.gather(1, flat).to(torch.uint8)
        return torch.where(ok, out, flat.to(torch.uint8)).view(b, c, h, w)
    raise ValueError(f"unknown RandAugment op {name!r}")


def rand_augment(
    x: torch.Tensor, ops: list[tuple[torch.Tensor, torch.Tensor]], fill: torch.Tensor
) -> torch.Tensor:
    """Apply the sampled layers to uint8 (B, C, H, W), op by op over the samples that drew it."""
    x = x.clone()
    for op, arg in ops:
        for k, name in enumerate(OPS):
            sel = torch.nonzero(op == k).flatten()
            if len(sel):
                dev_sel = sel.to(x.device)
                x[dev_sel] = apply_op(name, x[dev_sel], arg[sel], fill)
    return x


def fill_from_mean(mean: tuple[float, ...]) -> torch.Tensor:
    """timm's ``img_mean`` fill: the dataset mean in 0-255, rounded."""
    return torch.tensor([min(255, round(255 * m)) for m in mean], dtype=torch.uint8)


__all__ = ["OPS", "RandAugmentSpec", "apply_op", "fill_from_mean", "rand_augment", "sample_ops"]
