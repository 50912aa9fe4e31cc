"""Whole-batch augmentation on the training device: the view of each sample (random crop with zero
padding, or RandomResizedCrop; horizontal flip; RandAugment; normalisation; random erasing), then mixup /
cutmix of two such views with soft targets.

The random parameters of sample ``i`` at epoch ``e`` come from :mod:`unikd.data.hashing`, so the view is
a pure function of (seed, e, i). They are computed on the CPU in float64 (a few numbers per sample, so
they are identical on every device) and only the pixel work runs on the device.

Mixup: Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
CutMix: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers", ICCV 2019.
When both are enabled each mixed sample picks one of them with probability 1/2 (as timm does).
The ImageNet geometry lives in :mod:`unikd.data.resample`, RandAugment in :mod:`unikd.data.randaugment`,
random erasing in :mod:`unikd.data.erasing`; the mixing partner is the partner's own full view, as in timm
(per-sample transforms first, batch mixing last).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from unikd.data import hashing
from unikd.data.augment_config import AUGMENT_VERSION, CROPS, AugmentConfig
from unikd.data.erasing import erase, erase_params
from unikd.data.randaugment import RandAugmentSpec, fill_from_mean, rand_augment, sample_ops
from unikd.data.resample import center_views, rrc_params, rrc_views

__all__ = [
    "AUGMENT_VERSION",
    "CROPS",
    "AugmentConfig",
    "BatchAugmenter",
    "crop_flip",
    "flip_of",
    "sample_params",
    "signature",
]


def sample_params(
    cfg: AugmentConfig, seed: int, epoch: int, index: torch.Tensor, num_samples: int, height: int, width: int
) -> dict[str, torch.Tensor]:
    """The random parameters of the views of ``index`` (CPU int64) at ``epoch``; all CPU tensors.

    Keys: ``oy``, ``ox`` (crop offsets in 0..2p), ``flip`` (bool), ``partner`` (dataset index), ``lam``
    (float64 weight of the sample itself; 1 when not mixed), ``box`` (int64 (B, 4) y1, y2, x1, x2 of the
    cutmix box, empty when y1 == y2), ``cut`` (bool, cutmix rather than mixup).
    """
    index = index.to(torch.int64).cpu()
    b = index.shape[0]
    p = cfg.crop_padding
    span = 2 * p + 1
    out: dict[str, torch.Tensor] = {
        "oy": hashing.randint(seed, epoch, hashing.CROP_Y, index, span) if p else torch.full((b,), 0),
        "ox": hashing.randint(seed, epoch, hashing.CROP_X, index, span) if p else torch.full((b,), 0),
        "flip": (hashing.uniform(seed, epoch, hashing.FLIP, index) < 0.5)
        if cfg.hflip
        else torch.zeros(b, dtype=torch.bool),
    }
    lam = torch.ones(b, dtype=torch.float64)
    box = torch.zeros(b, 4, dtype=torch.int64)
    cut = torch.zeros(b, dtype=torch.bool)
    partner = index.clone()
    if cfg.mixing:
        mixed = hashing.uniform(seed, epoch, hashing.MIX_APPLY, index) < cfg.mix_prob
        if cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0:
            cut = hashing.uniform(seed, epoch, hashing.MIX_KIND, index) < 0.5
        else:
            cut = torch.full((b,), cfg.cutmix_alpha > 0)
        cut = cut & mixed
        # The partner is drawn over the whole dataset (not from the batch) so it does not depend on batching.
        partner = torch.where(mixed, hashing.randint(seed, epoch, hashing.PARTNER, index, num_samples), index)
        g = hashing.GAMMA_BASE
        lam_mix, lam_cut = lam, lam
        if cfg.mixup_alpha > 0:
            lam_mix = hashing.beta_symmetric(seed, epoch, g, index, cfg.mixup_alpha)
        if cfg.cutmix_alpha > 0:
            lam_cut = hashing.beta_symmetric(seed, epoch, g + 2, index, cfg.cutmix_alpha)
        # CutMix box: side ratio sqrt(1 - lam), centre uniform over the image, clipped at the border;
        # lam is then corrected to the exact kept area (Yun et al. 2019).
        ratio = torch.from_numpy(np.sqrt(1.0 - lam_cut.numpy()))  # numpy: see the note in hashing.py
        ch, cw = (ratio * height).floor().long(), (ratio * width).floor().long()
        cy = hashing.randint(seed, epoch, hashing.BOX_Y, index, height)
        cx = hashing.randint(seed, epoch, hashing.BOX_X, index, width)
        y1, y2 = (cy - ch // 2).clamp(0, height), (cy + ch - ch // 2).clamp(0, height)
        x1, x2 = (cx - cw // 2).clamp(0, width), (cx + cw - cw // 2).clamp(0, width)
        area = ((y2 - y1) * (x2 - x1)).to(torch.float64)
        lam_cut = 1.0 - area / (height * width)
        box = torch.where(cut[:, None], torch.stack([y1, y2, x1, x2], 1), box)
        lam = torch.where(cut, lam_cut, torch.where(mixed, lam_mix, lam))
    out.update(lam=lam, box=box, cut=cut, partner=partner)
    return out


def crop_flip(
    images: torch.Tensor,
    index: torch.Tensor,
    oy: torch.Tensor,
    ox: torch.Tensor,
    flip: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """Rows ``index`` of uint8 ``images`` (N, C, H, W), cropped after zero padding and flipped: (B, C, H, W).

    One gather does both: output pixel (y, x) reads source (y + oy - p, x' + ox - p) with x' the flipped
    column; reads outside the image are the zero padding.
    """
    _, c, h, w = images.shape
    src = images[index]
    if padding == 0 and not bool(flip.any()):
        return src
    b = src.shape[0]
    dev = images.device
    ys = torch.arange(h, device=dev)
    xs = torch.arange(w, device=dev)
    sy = ys[None, :] + (oy.to(dev) - padding)[:, None]  # (B, H)
    xf = torch.where(flip.to(dev)[:, None], w - 1 - xs[None, :], xs[None, :])
    sx = xf + (ox.to(dev) - padding)[:, None]  # (B, W)
    valid = ((sy >= 0) & (sy < h))[:, :, None] & ((sx >= 0) & (sx < w))[:, None, :]  # (B, H, W)
    flat = sy.clamp(0, h - 1)[:, :, None] * w + sx.clamp(0, w - 1)[:, None, :]
    out = src.reshape(b, c, h * w).gather(2, flat.reshape(b, 1, h * w).expand(b, c, h * w))
    return out.reshape(b, c, h, w) * valid[:, None]


class BatchAugmenter:
    """Turns dataset indices into augmented, normalised float32 batches on ``device``.

    ``images`` is the uint8 (N, C, H, W) dataset (already on ``device`` for the in-memory loader), or the
    rows of one batch (the DataLoader path, with ``rows`` mapping dataset indices to them); with
    ``precropped`` those rows already hold the RandomResizedCrop views (the DataLoader workers crop them).
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_classes: int,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.device = device
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # x_norm = (x / 255 - mean) / std = x * scale - shift, one fused multiply-subtract per pixel.
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t
        self.ra = RandAugmentSpec.parse(cfg.randaugment) if cfg.randaugment else None
        self.fill = fill_from_mean(tuple(mean))

    def normalize(self, x_u8: torch.Tensor) -> torch.Tensor:
        return x_u8.to(self.device, torch.float32).mul_(self.scale).sub_(self.shift)

    def geometry(
        self, images: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, rows: Callable,
        precropped: bool,
    ) -> torch.Tensor:
        """uint8 crops (and flips) of dataset rows ``index``: (B, C, H', W')."""
        cfg = self.cfg
        dev_index = rows(index).to(images.device)
        if cfg.crop == "rrc":
            if precropped:
                return images[dev_index]
            _, _, h, w = images.shape
            box = rrc_params(seed, epoch, index, h, w, cfg.crop_scale, cfg.crop_ratio)
            flip = flip_of(cfg, seed, epoch, index)
            return rrc_views(images[dev_index], box, flip, cfg.crop_size)  # type: ignore[arg-type]
        prm = sample_params(AugmentConfig(cfg.crop_padding, cfg.hflip), seed, epoch, index, 1, 1, 1)
        return crop_flip(images, dev_index, prm["oy"], prm["ox"], prm["flip"], cfg.crop_padding)

    def views(
        self, images: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, rows: Callable,
        precropped: bool,
    ) -> torch.Tensor:
        """The normalised float32 view of each of ``index`` (no mixing)."""
        x = self.geometry(images, index, seed, epoch, rows, precropped)
        _, _, h, w = x.shape
        if self.ra is not None:
            x = rand_augment(x, sample_ops(self.ra, seed, epoch, index, w, h), self.fill)
        x = self.normalize(x)
        if self.cfg.random_erasing > 0:
            erase(x, erase_params(self.cfg.random_erasing, seed, epoch, index, h, w), index, seed, epoch)
        return x

    def eval_batch(self, images: torch.Tensor, crop_size: int | None, resize: int | None) -> torch.Tensor:
        """Eval images: Resize(shorter side) + CenterCrop when ``crop_size`` is set, then normalised."""
        if crop_size is not None:
            images = center_views(images, resize or round(crop_size / 0.875), crop_size)
        return self.normalize(images)

    def train_batch(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        index: torch.Tensor,
        seed: int,
        epoch: int,
        num_samples: int | None = None,
        rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
        precropped: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented batch for dataset indices ``index`` (CPU int64): (images float32, target).

        ``images``/``labels`` hold the whole dataset (in-memory loader), or only some samples (the
        DataLoader path) with ``rows`` mapping dataset indices to their rows and ``num_samples`` the
        dataset size (mixup partners are drawn over the whole dataset).
        """
        n = images.shape[0] if num_samples is None else num_samples
        rows = rows if rows is not None else (lambda t: t)
        cfg = self.cfg
        x = self.views(images, index, seed, epoch, rows, precropped)
        dev_index = rows(index).to(self.device)
        if not cfg.mixing:
            return x, labels[dev_index]
        _, _, h, w = x.shape
        prm = sample_params(cfg, seed, epoch, index, n, h, w)
        partner = prm["partner"]
        xp = self.views(images, partner, seed, epoch, rows, precropped)
        dev_partner = rows(partner).to(self.device)
        lam = prm["lam"].to(self.device, torch.float32)
        box = prm["box"].to(self.device)
        ys = torch.arange(h, device=self.device)
        xs = torch.arange(w, device=self.device)
        inside = ((ys[None, :] >= box[:, 0:1]) & (ys[None, :] < box[:, 1:2]))[:, :, None] & (
            (xs[None, :] >= box[:, 2:3]) & (xs[None, :] < box[:, 3:4])
        )[:, None, :]
        cut = prm["cut"].to(self.device).view(-1, 1, 1)
        # Weight of the sample's own pixel: lam everywhere (mixup) or 0 inside the box, 1 outside (cutmix);
        # one small (B, 1, H, W) map and a single lerp then cover both.
        weight = torch.where(cut, (~inside).to(torch.float32), lam.view(-1, 1, 1)).unsqueeze(1)
        out = torch.lerp(xp, x, weight)
        y = F.one_hot(labels[dev_index], self.num_classes).to(torch.float32)
        yp = F.one_hot(labels[dev_partner], self.num_classes).to(torch.float32)
        target = torch.lerp(yp, y, lam.view(-1, 1))
        return out, target


def flip_of(cfg: AugmentConfig, seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """The horizontal-flip decision of each of ``index`` (bool, CPU)."""
    if not cfg.hflip:
        return torch.zeros(index.shape[0], dtype=torch.bool)
    return hashing.uniform(seed, epoch, hashing.FLIP, index.to(torch.int64).cpu()) < 0.5


def signature(cfg: AugmentConfig, seed: int, mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
    """A JSON-able description of everything (besides epoch and index) that determines a view."""
    return {
        "augment_version": AUGMENT_VERSION,
        "hash": "lowbias32-counter",
        "seed": int(seed),
        **cfg.as_dict(),
        "mean": [round(float(m), 8) for m in mean],
        "std": [round(float(s), 8) for s in std],
        "uses_mixing": cfg.mixing,
        "lambda_note": "Beta(alpha, alpha) by Marsaglia-Tsang on hashed counters" if cfg.mixing else None,
    }
