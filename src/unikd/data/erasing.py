"""Random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020) as timm's
``RandomErasing(probability, mode="pixel", max_count=1)`` applies it in the DeiT recipes: with probability
p, one rectangle of area fraction U(0.02, 1/3) and log-uniform aspect ratio in [0.3, 1/0.3] (10 attempts
until it fits strictly inside) is replaced by per-pixel standard normal noise, in normalised space.

The box of sample i and its noise are pure functions of (seed, epoch, i): parameters from
:mod:`unikd.data.hashing` on the host, the noise hashed per pixel on the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unikd.data import hashing

ATTEMPTS = 10
AREA = (0.02, 1 / 3)
ASPECT = (0.3, 1 / 0.3)


def erase_params(
    prob: float, seed: int, epoch: int, index: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """int64 (B, 4) boxes (top, left, h, w); h = 0 where nothing is erased."""
    b = index.shape[0]
    base = hashing.ERASE
    apply = hashing._uniform(seed, epoch, base, index) < prob
    u_area = hashing._uniform(seed, epoch, list(range(base + 1, base + 1 + ATTEMPTS)), index)
    u_aspect = hashing._uniform(seed, epoch, list(range(base + 11, base + 11 + ATTEMPTS)), index)
    area = height * width * (AREA[0] + (AREA[1] - AREA[0]) * u_area)
    lo, hi = math.log(ASPECT[0]), math.log(ASPECT[1])
    aspect = np.exp(lo + (hi - lo) * u_aspect)
    h = np.round(np.sqrt(area * aspect)).astype(np.int64)
    w = np.round(np.sqrt(area / aspect)).astype(np.int64)
    ok = (w < width) & (h < height)
    first = np.argmax(ok, axis=0)
    found = ok.any(axis=0) & apply
    h = np.where(found, np.take_along_axis(h, first[None], 0)[0], 0)
    w = np.where(found, np.take_along_axis(w, first[None], 0)[0], 0)
    # timm draws top/left with random.randint(0, H - h) (inclusive).
    top = hashing._u32(seed, epoch, base + 21, index).astype(np.int64) % (height - h + 1)
    left = hashing._u32(seed, epoch, base + 22, index).astype(np.int64) % (width - w + 1)
    return torch.from_numpy(np.stack([top, left, h, w], 1).reshape(b, 4))


def erase(x: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """Replace each sample's box of normalised float ``x`` (B, C, H, W) by hashed normal noise (in place)."""
    b, c, h, w = x.shape
    todo = torch.nonzero(boxes[:, 2] > 0).flatten().tolist()
    if not todo:
        return x
    dev = x.device
    pixels = torch.arange(c * h * w, device=dev, dtype=torch.int64).view(c, h, w)
    # A per-sample offset (hashed from the index) keeps the pixel counters below 2**32 for any dataset size.
    salt = hashing.hash_u32(seed, epoch, hashing.ERASE + 25, index.cpu())
    for k in todo:
        top, left, bh, bw = (int(v) for v in boxes[k])
        counter = (pixels[:, top : top + bh, left : left + bw] + int(salt[k])) & 0xFFFFFFFF
        noise = hashing.normal_device(seed, epoch, hashing.ERASE + 23, counter)
        x[k, :, top : top + bh, left : left + bw] = noise
    return x
