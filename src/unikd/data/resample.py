"""The ImageNet-protocol geometry: RandomResizedCrop + flip training views and Resize + CenterCrop
evaluation views, as pure functions of (seed, epoch, index) and the source size.

Parameters follow torchvision's ``RandomResizedCrop.get_params`` (10 attempts of a random area fraction in
``scale`` and a log-uniform aspect ratio in ``ratio``, then a centred crop clamped to ``ratio``),
``Resize(shorter side)`` and ``CenterCrop``; their random numbers come from :mod:`unikd.data.hashing`.
Pixels are resampled as ``F.interpolate(crop, mode="bilinear", antialias=True)`` does (PIL's triangle
filter widened by the downscale factor), written as one separable linear map per sample: output =
``Wy @ image @ Wx.T`` with ``Wy`` (S, H) and ``Wx`` (S, W) holding the filter weights of the crop's rows and
columns, the flip being ``Wx`` reversed. Results are rounded to uint8, as torchvision does for uint8 images.
Each sample is resampled on its own (not batched), so its view does not depend on the batch it is in.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unikd.data import hashing

ATTEMPTS = 10


def rrc_params(
    seed: int,
    epoch: int,
    index: torch.Tensor,
    height: torch.Tensor | int,
    width: torch.Tensor | int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top, left, h, w) int64 (B,) crop boxes of ``index`` for sources of size ``height`` x ``width``."""
    b = index.shape[0]
    hh = np.broadcast_to(np.asarray(height, dtype=np.int64).reshape(-1), (b,)).astype(np.float64)
    ww = np.broadcast_to(np.asarray(width, dtype=np.int64).reshape(-1), (b,)).astype(np.float64)
    area = hh * ww
    streams = list(range(hashing.RRC_AREA, hashing.RRC_AREA + ATTEMPTS))
    u_area = hashing._uniform(seed, epoch, streams, index)  # (10, B)
    u_ratio = hashing._uniform(seed, epoch, [s + ATTEMPTS for s in streams], index)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    aspect = np.exp(lo + (hi - lo) * u_ratio)
    w = np.round(np.sqrt(target * aspect))  # round half to even, as Python's round()
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= ww) & (h > 0) & (h <= hh)
    first = np.argmax(ok, axis=0)
    found = ok.any(axis=0)
    pick_w = np.take_along_axis(w, first[None], 0)[0]
    pick_h = np.take_along_axis(h, first[None], 0)[0]
    # Fallback (no attempt fits): the whole image, clamped to the ratio range, centred.
    in_ratio = ww / hh
    fb_w = np.where(in_ratio < ratio[0], ww, np.where(in_ratio > ratio[1], np.round(hh * ratio[1]), ww))
    fb_h = np.where(in_ratio < ratio[0], np.round(ww / ratio[0]), hh)
    h_out = np.where(found, pick_h, fb_h).astype(np.int64)
    w_out = np.where(found, pick_w, fb_w).astype(np.int64)
    top_r = hashing._u32(seed, epoch, hashing.RRC_TOP, index).astype(np.int64) % (
        hh.astype(np.int64) - h_out + 1
    )
    left_r = hashing._u32(seed, epoch, hashing.RRC_LEFT, index).astype(np.int64) % (
        ww.astype(np.int64) - w_out + 1
    )
    top = np.where(found, top_r, (hh.astype(np.int64) - h_out) // 2)
    left = np.where(found, left_r, (ww.astype(np.int64) - w_out) // 2)
    return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in (top, left, h_out, w_out))  # type: ignore[return-value]


def resize_shorter(height: int, width: int, size: int) -> tuple[int, int]:
    """The (H, W) after resizing the shorter side to ``size`` (torchvision's ``Resize(int)`` rule)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_offset(length: int, crop: int) -> int:
    """torchvision's ``CenterCrop`` offset: ``int(round((length - crop) / 2))``."""
    return int(round((length - crop) / 2.0))


def axis_weights(
    length: int,
    src_start: torch.Tensor,
    src_len: torch.Tensor,
    out_len: torch.Tensor,
    out_start: torch.Tensor,
    count: int,
    device: torch.device,
) -> torch.Tensor:
    """(B, count, length) float64 weights: rows ``out_start .. out_start + count`` of the antialiased
    bilinear resize of the source span ``[src_start, src_start + src_len)`` to ``out_len`` samples.

    Per output row i: scale = src_len / out_len, centre = scale (i + 0.5), support = max(scale, 1),
    window ``[trunc(centre - support + 0.5), trunc(centre + support + 0.5))`` clipped to the span, weights
    ``max(0, 1 - |(j - centre + 0.5) / max(scale, 1)|)`` normalised to sum 1 (PyTorch's ``_upsample_*_aa``).
    """
    f64 = torch.float64
    src_start, src_len = src_start.to(device, f64)[:, None, None], src_len.to(device, f64)[:, None, None]
    out_len, out_start = out_len.to(device, f64)[:, None, None], out_start.to(device, f64)[:, None, None]
    scale = src_len / out_len
    support = torch.clamp(scale, min=1.0)
    i = torch.arange(count, device=device, dtype=f64)[None, :, None] + out_start
    centre = scale * (i + 0.5)
    lo = torch.clamp(torch.trunc(centre - support + 0.5), min=0.0)
    hi = torch.minimum(torch.trunc(centre + support + 0.5), src_len)
    j = torch.arange(length, device=device, dtype=f64)[None, None, :] - src_start  # index within the span
    w = torch.clamp(1.0 - torch.abs((j - centre + 0.5) / support), min=0.0) * ((j >= lo) & (j < hi))
    return w / w.sum(dim=2, keepdim=True)


def warp(image: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """One uint8 (C, H, W) image through ``wy`` (S, H) and ``wx`` (S', W): uint8 (C, S, S')."""
    x = image.to(torch.float32)
    out = torch.matmul(torch.matmul(wy.to(torch.float32), x), wx.to(torch.float32).transpose(0, 1))
    return out.round_().clamp_(0, 255).to(torch.uint8)


def rrc_views(
    images: list[torch.Tensor] | torch.Tensor,
    params: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    flip: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """RandomResizedCrop views (uint8 (B, C, size, size)) of uint8 (C, H, W) sources."""
    top, left, h, w = params
    dev = images[0].device
    b = len(images)
    full = torch.full((b,), size, dtype=torch.int64)
    zero = torch.zeros(b, dtype=torch.int64)
    out = []
    for k in range(b):
        hk, wk = images[k].shape[-2:]
        wy = axis_weights(hk, top[k : k + 1], h[k : k + 1], full[k : k + 1], zero[k : k + 1], size, dev)[0]
        wx = axis_weights(wk, left[k : k + 1], w[k : k + 1], full[k : k + 1], zero[k : k + 1], size, dev)[0]
        out.append(warp(images[k], wy, wx.flip(0) if bool(flip[k]) else wx))
    return torch.stack(out)


def center_views(images: list[torch.Tensor] | torch.Tensor, resize: int, size: int) -> torch.Tensor:
    """Resize(shorter side = ``resize``) + CenterCrop(``size``) of each uint8 (C, H, W) source."""
    out = []
    for img in images:
        hk, wk = img.shape[-2:]
        rh, rw = resize_shorter(hk, wk, resize)
        if min(rh, rw) < size:
            raise ValueError(
                f"eval resize {resize} gives {rh}x{rw} images, smaller than crop_size {size}; set "
                "data.eval_resize >= data.crop_size"
            )
        one = torch.ones(1, dtype=torch.int64)
        dev = img.device
        wy = axis_weights(hk, 0 * one, hk * one, rh * one, center_offset(rh, size) * one, size, dev)[0]
        wx = axis_weights(wk, 0 * one, wk * one, rw * one, center_offset(rw, size) * one, size, dev)[0]
        out.append(warp(img, wy, wx))
    return torch.stack(out)
