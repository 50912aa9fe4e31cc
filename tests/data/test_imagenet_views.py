"""The ImageNet protocol views: RandomResizedCrop / Resize + CenterCrop geometry, random erasing, and their
loader integration, each against a per-sample reference written from the published algorithms."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_files import make_imagefolder

from unikd.data import ArrayDataset, FolderDataset, InMemoryLoader, TorchLoader, create_dataset, hashing
from unikd.data.augment import AugmentConfig
from unikd.data.erasing import erase, erase_params
from unikd.data.resample import (
    axis_weights,
    center_offset,
    center_views,
    resize_shorter,
    rrc_params,
    rrc_views,
)

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
RRC = {"crop": "rrc", "crop_size": 12, "eval_resize": 14}
DEIT = {
    **RRC,
    "randaugment": "rand-m9-mstd0.5-inc1",
    "random_erasing": 0.25,
    "mixup_alpha": 0.8,
    "cutmix_alpha": 1.0,
}


def toy(n: int = 29, h: int = 16, w: int = 20, classes: int = 3) -> ArrayDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    return ArrayDataset(x, torch.arange(n) % classes, [str(i) for i in range(classes)], [0.4] * 3, [0.2] * 3)


def rrc_ref(seed, epoch, i, height, width, scale, ratio):
    """torchvision's RandomResizedCrop.get_params with the hashed uniforms in place of torch's RNG."""
    idx = torch.tensor([i])
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for k in range(10):
        u_area = float(hashing.uniform(seed, epoch, hashing.RRC_AREA + k, idx)[0])
        u_ratio = float(hashing.uniform(seed, epoch, hashing.RRC_AREA + 10 + k, idx)[0])
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u_ratio)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(hashing.hash_u32(seed, epoch, hashing.RRC_TOP, idx)[0]) % (height - h + 1)
            left = int(hashing.hash_u32(seed, epoch, hashing.RRC_LEFT, idx)[0]) % (width - w + 1)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(
    ("h", "w", "scale", "ratio"),
    [
        (16, 20, SCALE, RATIO),
        (37, 53, (0.3, 0.9), (0.5, 2.0)),
        (10, 40, (0.9, 1.0), (1.0, 1.0)),
        (40, 10, (0.9, 1.0), (1.0, 1.0)),
        (7, 7, (1.0, 1.0), (1.0, 1.0)),
    ],
)
def test_rrc_params_match_torchvision_algorithm(h, w, scale, ratio):
    idx = torch.arange(60)
    top, left, hh, ww = rrc_params(5, 3, idx, h, w, scale, ratio)
    for i in range(60):
        assert (int(top[i]), int(left[i]), int(hh[i]), int(ww[i])) == rrc_ref(5, 3, i, h, w, scale, ratio)
        assert 0 <= top[i] and top[i] + hh[i] <= h and 0 <= left[i] and left[i] + ww[i] <= w


def aa_weights_ref(in_len: int, out_len: int, rows: range) -> np.ndarray:
    """PyTorch's antialiased bilinear weights (``_compute_indices_min_size_weights_aa``), row by row."""
    scale = in_len / out_len
    support = scale if scale >= 1 else 1.0
    invscale = 1 / scale if scale >= 1 else 1.0
    out = np.zeros((len(rows), in_len))
    for r, i in enumerate(rows):
        centre = scale * (i + 0.5)
        xmin = max(int(centre - support + 0.5), 0)
        xsize = min(int(centre + support + 0.5), in_len) - xmin
        ws = [max(0.0, 1 - abs((j + xmin - centre + 0.5) * invscale)) for j in range(xsize)]
        total = sum(ws)
        for j, v in enumerate(ws):
            out[r, xmin + j] = v / total
    return out


@pytest.mark.parametrize(
    ("in_len", "out_len", "start", "count"),
    [(37, 12, 0, 12), (9, 24, 0, 24), (256, 224, 0, 224), (53, 40, 5, 30), (13, 13, 0, 13)],
)
def test_axis_weights_match_the_formula(in_len, out_len, start, count):
    t = torch.tensor
    got = axis_weights(in_len + 3, t([2]), t([in_len]), t([out_len]), t([start]), count, torch.device("cpu"))[
        0
    ]
    want = aa_weights_ref(in_len, out_len, range(start, start + count))
    assert torch.allclose(got[:, 2 : 2 + in_len], torch.from_numpy(want), atol=1e-12)
    assert float(got[:, :2].abs().sum()) == 0 and float(got[:, 2 + in_len :].abs().sum()) == 0


def _agree(a: torch.Tensor, b: torch.Tensor) -> None:
    """uint8 images equal up to float rounding of the resampling (+-1 where a value sits near a .5 tie)."""
    d = (a.int() - b.int()).abs()
    assert int(d.max()) <= 1 and float((d > 0).float().mean()) < 0.05


def test_rrc_pixels_match_interpolate_per_sample():
    ds = toy()
    idx = torch.arange(len(ds))
    box = rrc_params(0, 1, idx, 16, 20, SCALE, RATIO)
    flip = hashing.uniform(0, 1, hashing.FLIP, idx) < 0.5
    got = rrc_views(ds.images, box, flip, 12)
    for i in range(len(ds)):
        t, l, h, w = (int(v[i]) for v in box)
        ref = F.interpolate(
            ds.images[i : i + 1, :, t : t + h, l : l + w].float(),
            size=(12, 12),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
        ref = ref.flip(-1) if flip[i] else ref
        # Before rounding: the separable weights reproduce interpolate's values to float32 precision.
        one = torch.ones(1, dtype=torch.int64)
        wy = axis_weights(16, t * one, h * one, 12 * one, 0 * one, 12, torch.device("cpu"))[0]
        wx = axis_weights(20, l * one, w * one, 12 * one, 0 * one, 12, torch.device("cpu"))[0]
        wx = wx.flip(0) if flip[i] else wx
        exact = wy @ ds.images[i].double() @ wx.T
        assert torch.allclose(exact.float(), ref, atol=2e-3)
        _agree(got[i], ref.round().clamp(0, 255).to(torch.uint8))


@pytest.mark.parametrize(("h", "w"), [(16, 20), (23, 14), (30, 30)])
def test_center_view_matches_resize_then_center_crop(h, w):
    img = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(h), dtype=torch.uint8)
    rh, rw = resize_shorter(h, w, 14)
    assert min(rh, rw) == 14 and (rh, rw) == ((14, int(14 * w / h)) if h <= w else (int(14 * h / w), 14))
    full = F.interpolate(img[None].float(), size=(rh, rw), mode="bilinear", antialias=True)[0]
    t, l = center_offset(rh, 12), center_offset(rw, 12)
    assert (t, l) == (int(round((rh - 12) / 2)), int(round((rw - 12) / 2)))
    _agree(
        center_views([img], 14, 12)[0], full[:, t : t + 12, l : l + 12].round().clamp(0, 255).to(torch.uint8)
    )
    with pytest.raises(ValueError, match="eval_resize >= data.crop_size"):
        center_views([img], 10, 12)


def erase_ref(prob, seed, epoch, i, height, width):
    """timm's RandomErasing box (mode pixel, one box), with the hashed uniforms."""
    idx = torch.tensor([i])
    if float(hashing.uniform(seed, epoch, hashing.ERASE, idx)[0]) >= prob:
        return None
    for k in range(10):
        u1 = float(hashing.uniform(seed, epoch, hashing.ERASE + 1 + k, idx)[0])
        u2 = float(hashing.uniform(seed, epoch, hashing.ERASE + 11 + k, idx)[0])
        target = height * width * (0.02 + (1 / 3 - 0.02) * u1)
        aspect = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u2)
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top = int(hashing.hash_u32(seed, epoch, hashing.ERASE + 21, idx)[0]) % (height - h + 1)
            left = int(hashing.hash_u32(seed, epoch, hashing.ERASE + 22, idx)[0]) % (width - w + 1)
            return top, left, h, w
    return None


def test_erasing_matches_timm_algorithm_and_only_touches_the_box():
    idx = torch.arange(200)
    boxes = erase_params(0.5, 2, 4, idx, 12, 16)
    erased = 0
    for i in range(200):
        want = erase_ref(0.5, 2, 4, i, 12, 16)
        if want is None:
            assert int(boxes[i, 2]) == 0
        else:
            erased += 1
            assert tuple(int(v) for v in boxes[i]) == want
    assert 70 < erased < 130  # probability 0.5
    x = torch.zeros(200, 3, 12, 16)
    erase(x, boxes, idx, 2, 4)
    for i in range(200):
        t, l, h, w = (int(v) for v in boxes[i])
        inside = torch.zeros(12, 16, dtype=torch.bool)
        inside[t : t + h, l : l + w] = True
        assert float(x[i][:, ~inside].abs().sum()) == 0 and bool((x[i][:, inside] != 0).all())
    noise = x[x != 0]
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
    again = erase(torch.zeros(5, 3, 12, 16), boxes[10:15], idx[10:15], 2, 4)
    assert torch.equal(again, x[10:15])  # the noise of sample i does not depend on its batch


def views(loader, epoch: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return {i: (b.images[k], b.target[k]) for b in loader for k, i in enumerate(b.index.tolist())}


@pytest.mark.parametrize("opts", [RRC, DEIT])
def test_views_are_pure_functions_of_seed_epoch_index(opts):
    ds = toy()
    ref = views(InMemoryLoader(ds, 8, train=True, seed=4, **opts), 2)
    x = next(iter(ref.values()))[0]
    assert x.shape == (3, 12, 12)
    for bs, ws in ((4, 1), (6, 2)):
        for rank in range(ws):
            other = views(
                InMemoryLoader(ds, bs, train=True, seed=4, rank=rank, world_size=ws, drop_last=False, **opts),
                2,
            )
            for i in set(other) & set(ref):
                assert torch.equal(other[i][0], ref[i][0]) and torch.equal(other[i][1], ref[i][1])
    ev = next(iter(InMemoryLoader(ds, 8, train=False, **opts)))
    want = (center_views(ds.images[:8], 14, 12).float() / 255 - 0.4) / 0.2
    assert torch.allclose(ev.images, want, atol=1e-5)


def test_torch_loader_cuts_the_same_views_and_reads_images_of_any_size(tmp_path: Path):
    make_imagefolder(tmp_path / "src", top=None, counts={"train": 5, "test": 2}, size=(16, 20))
    mem = create_dataset("imagefolder", root=tmp_path / "src", cache_dir=tmp_path / "cache")
    folder = FolderDataset(tmp_path / "src", "train", mean=mem.mean, std=mem.std)
    for opts in (RRC, DEIT):
        a = views(InMemoryLoader(mem, 5, train=True, seed=2, **opts), 1)
        b = views(TorchLoader(folder, 5, train=True, seed=2, num_workers=0, **opts), 1)
        assert a.keys() == b.keys()
        for i in a:
            assert torch.allclose(a[i][0], b[i][0], atol=1e-6) and torch.equal(a[i][1], b[i][1])
    test_folder = FolderDataset(tmp_path / "src", "test", mean=mem.mean, std=mem.std)
    mem_test = create_dataset(
        "imagefolder", root=tmp_path / "src", split="test", cache_dir=tmp_path / "cache"
    )
    ev_t = torch.cat([x.images for x in TorchLoader(test_folder, 4, train=False, num_workers=0, **RRC)])
    ev_m = torch.cat([x.images for x in InMemoryLoader(mem_test, 4, train=False, **RRC)])
    assert ev_t.shape == (6, 3, 12, 12) and torch.allclose(ev_t, ev_m, atol=1e-6)
    # Images of different sizes (as in ImageNet) need no data.image_size: the workers cut fixed-size views.
    mixed = tmp_path / "mixed"
    make_imagefolder(mixed, top=None, counts={"train": 2, "test": 1}, size=(18, 25), classes=("a", "b"))
    make_imagefolder(mixed, top=None, counts={"train": 2, "test": 1}, size=(30, 14), classes=("c",))
    ds = FolderDataset(mixed, "train")
    batch = next(iter(TorchLoader(ds, 6, train=True, num_workers=0, **DEIT)))
    assert batch.images.shape == (6, 3, 12, 12) and batch.target.shape == (6, 3)


def test_signature_covers_every_augmentation_parameter():
    ds = toy()
    base = InMemoryLoader(ds, 8, train=True, **RRC).augment_signature()
    changed = {
        "crop_padding": 2,
        "hflip": False,
        "mixup_alpha": 0.2,
        "cutmix_alpha": 0.5,
        "mix_prob": 0.5,
        "crop": "pad",
        "crop_size": 10,
        "crop_scale": (0.2, 1.0),
        "crop_ratio": (0.5, 2.0),
        "randaugment": "rand-m9",
        "random_erasing": 0.25,
    }
    assert set(changed) == {
        f.name for f in dataclasses.fields(AugmentConfig)
    }  # a new field needs a case here
    for key, value in changed.items():
        opts = {**RRC, key: value}
        if key == "crop":
            opts = {k: v for k, v in opts.items() if k not in ("crop_size", "eval_resize")} | {"crop": "pad"}
        sig = InMemoryLoader(ds, 8, train=True, **opts).augment_signature()
        assert sig != base, key
    assert InMemoryLoader(ds, 8, train=True, **{**RRC, "eval_resize": 16}).augment_signature() != base


def test_bad_view_options_name_the_fix():
    ds = toy()
    with pytest.raises(ValueError, match="crop=rrc needs crop_size"):
        InMemoryLoader(ds, 8, train=True, crop="rrc")
    with pytest.raises(ValueError, match="crop must be one of"):
        InMemoryLoader(ds, 8, train=True, crop="random")
    with pytest.raises(ValueError, match="area fraction"):
        InMemoryLoader(ds, 8, train=True, crop="rrc", crop_size=8, crop_scale=(0.5, 2.0))
    with pytest.raises(ValueError, match="random_erasing is a probability"):
        InMemoryLoader(ds, 8, train=True, random_erasing=1.5)
    with pytest.raises(ValueError, match="rand-m9-mstd0.5-inc1"):
        InMemoryLoader(ds, 8, train=True, randaugment="m9")
    with pytest.raises(ValueError, match="eval_resize=8 needs"):
        InMemoryLoader(ds, 8, train=False, crop="rrc", crop_size=12, eval_resize=8)
