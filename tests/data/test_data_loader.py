"""InMemoryLoader / TorchLoader: views as pure functions of (seed, epoch, i), sharding, mixing, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from data_files import make_imagefolder

from unikd.data import (
    ArrayDataset,
    FolderDataset,
    InMemoryLoader,
    TorchLoader,
    create_dataset,
    create_loader,
    hashing,
)
from unikd.data.augment import crop_flip, sample_params


def toy(n: int = 37, c: int = 3, h: int = 6, w: int = 5, classes: int = 4) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return ArrayDataset(x, y, [str(i) for i in range(classes)], [0.5] * c, [0.25] * c, name="toy")


def views(loader: InMemoryLoader | TorchLoader, epoch: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    out = {}
    for b in loader:
        for k, i in enumerate(b.index.tolist()):
            out[i] = (b.images[k], b.target[k])
    return out


MIX = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "mix_prob": 0.8}


def test_hash_matches_python_reference() -> None:
    idx = torch.tensor([0, 1, 2, 12345, 2**32 - 1])
    key = hashing.stream_key(7, 3, hashing.FLIP)
    want = [hashing._mix_int(hashing._mix_int((i + key) & 0xFFFFFFFF) ^ key) for i in idx.tolist()]
    assert hashing.hash_u32(7, 3, hashing.FLIP, idx).tolist() == want


def test_beta_lambda_moments() -> None:
    lam = hashing.beta_symmetric(0, 0, hashing.GAMMA_BASE, torch.arange(20_000), 0.4)
    assert 0 <= float(lam.min()) and float(lam.max()) <= 1
    assert abs(float(lam.mean()) - 0.5) < 0.02 and abs(float(lam.var()) - 1 / (4 * 1.8)) < 0.02


def test_crop_flip_matches_per_sample_reference() -> None:
    ds = toy()
    idx = torch.arange(len(ds))
    oy = hashing.randint(1, 2, hashing.CROP_Y, idx, 9)
    ox = hashing.randint(1, 2, hashing.CROP_X, idx, 9)
    flip = hashing.uniform(1, 2, hashing.FLIP, idx) < 0.5
    got = crop_flip(ds.images, idx, oy, ox, flip, 4)
    padded = F.pad(ds.images, (4, 4, 4, 4))
    for i in range(len(ds)):
        ref = padded[i, :, oy[i] : oy[i] + 6, ox[i] : ox[i] + 5]
        ref = ref.flip(-1) if flip[i] else ref
        assert torch.equal(got[i], ref), i


@pytest.mark.parametrize("mix", [{}, MIX])
def test_view_is_pure_function_of_seed_epoch_index(mix: dict) -> None:
    ds = toy()
    ref = views(InMemoryLoader(ds, 8, train=True, seed=5, **mix), 2)
    for bs, ws, shuffle in ((4, 1, True), (12, 3, True), (6, 2, False)):
        for rank in range(ws):
            other = views(
                InMemoryLoader(
                    ds,
                    bs,
                    train=True,
                    seed=5,
                    rank=rank,
                    world_size=ws,
                    shuffle=shuffle,
                    drop_last=False,
                    **mix,
                ),
                2,
            )
            for i, (x, y) in other.items():
                if i in ref:
                    assert torch.equal(x, ref[i][0]) and torch.equal(y, ref[i][1])
    e3 = views(InMemoryLoader(ds, 8, train=True, seed=5, **mix), 3)
    common = set(ref) & set(e3)
    assert sum(not torch.equal(ref[i][0], e3[i][0]) for i in common) > len(common) // 2
    s6 = views(InMemoryLoader(ds, 8, train=True, seed=6, **mix), 2)
    assert any(not torch.equal(ref[i][0], s6[i][0]) for i in set(ref) & set(s6))


def test_order_and_rank_sharding() -> None:
    ds = toy()
    one = InMemoryLoader(ds, 8, train=True, seed=1)
    assert len(one) == 37 // 8
    one.set_epoch(4)
    full = [b.index for b in one]
    again = InMemoryLoader(ds, 8, train=True, seed=1)
    again.set_epoch(4)
    assert all(torch.equal(a, b.index) for a, b in zip(full, again))
    assert len(torch.cat(full).unique()) == 32  # no repeats within an epoch
    one.set_epoch(5)
    assert not torch.equal(torch.cat(full), torch.cat([b.index for b in one]))
    ranks = [InMemoryLoader(ds, 8, train=True, seed=1, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(4)
    for step, (b0, b1) in enumerate(zip(*ranks)):
        assert b0.images.shape[0] == 4
        assert torch.equal(torch.cat([b0.index, b1.index]), full[step])


def test_eval_mode_plain_in_order_keeps_last_batch() -> None:
    ds = toy()
    ld = InMemoryLoader(ds, 8, train=False, **MIX)
    batches = list(ld)
    assert len(ld) == len(batches) == 5 and batches[-1].images.shape[0] == 5
    x = torch.cat([b.images for b in batches])
    assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(37))
    assert torch.allclose(x, (ds.images.float() / 255 - 0.5) / 0.25, atol=1e-5)
    assert batches[0].target.dtype == torch.int64


def test_mixing_soft_labels() -> None:
    ds = toy(n=64)
    ld = InMemoryLoader(ds, 64, train=True, crop_padding=0, hflip=False, **MIX)
    b = next(iter(ld))
    assert b.target.dtype == torch.float32 and b.target.shape == (64, 4)
    assert torch.allclose(b.target.sum(1), torch.ones(64))
    mixed = (b.target.max(1).values < 1).sum()
    assert 0 < int(mixed) < 64  # mix_prob 0.8: most but not all samples are mixed
    # Own-label weight equals lam; for a cutmix sample it is the share of pixels kept from the sample.
    prm = sample_params(ld.cfg, 0, 0, b.index, 64, 6, 5)
    own = b.target[torch.arange(64), ds.labels[b.index]]
    partner_same_label = ds.labels[prm["partner"]] == ds.labels[b.index]
    assert torch.allclose(own[~partner_same_label], prm["lam"].float()[~partner_same_label])
    cut = prm["cut"] & (prm["partner"] != b.index)
    raw = (b.images * 0.25 + 0.5) * 255
    for k in torch.nonzero(cut).flatten().tolist()[:5]:
        kept = (raw[k].round() == ds.images[b.index[k]].float()).all(0).float().mean()
        assert abs(float(kept) - float(prm["lam"][k])) < 0.2  # random pixels rarely coincide


def test_resume_mid_epoch_is_exact() -> None:
    ds = toy()
    ref = InMemoryLoader(ds, 4, train=True, seed=2, **MIX)
    ref.set_epoch(1)
    want = [b for b in ref]
    ld = InMemoryLoader(ds, 4, train=True, seed=2, **MIX)
    ld.set_epoch(1)
    it = iter(ld)
    got = [next(it) for _ in range(3)]
    state = ld.state_dict()
    assert state["epoch"] == 1 and state["position"] == 3
    resumed = InMemoryLoader(ds, 4, train=True, seed=2, **MIX)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the trainer calls it again; the position must survive
    got += list(resumed)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a.images, b.images) and torch.equal(a.target, b.target)
    assert resumed.state_dict()["epoch"] == 2 and resumed.state_dict()["position"] == 0
    with pytest.raises(ValueError, match="batch_size"):
        InMemoryLoader(ds, 8, train=True, seed=2).load_state_dict(state)


def test_loader_argument_errors() -> None:
    ds = toy()
    with pytest.raises(ValueError, match="divisible by world_size"):
        InMemoryLoader(ds, 9, train=True, world_size=2)
    with pytest.raises(ValueError, match="drop_last"):
        InMemoryLoader(ds, 64, train=True)
    with pytest.raises(ValueError, match="mix_prob"):
        InMemoryLoader(ds, 8, train=True, mix_prob=2.0)
    sig = InMemoryLoader(ds, 8, train=True, **MIX).augment_signature()
    assert sig["mixup_alpha"] == 0.4 and sig["dataset"] == ds.content_hash
    assert sig != InMemoryLoader(ds, 8, train=True).augment_signature()


def test_torch_loader_gives_the_same_views(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "src", top=None, counts={"train": 6, "test": 2})
    root = tmp_path / "src"
    mem = create_dataset("imagefolder", root=root, cache_dir=tmp_path / "cache")
    folder = FolderDataset(root, "train", mean=mem.mean, std=mem.std)
    assert folder.classes == mem.classes and len(folder) == len(mem)
    for kw in ({}, MIX):
        a = views(InMemoryLoader(mem, 6, train=True, seed=3, **kw), 1)
        tl = create_loader(folder, 6, train=True, seed=3, num_workers=0, **kw)
        assert isinstance(tl, TorchLoader) and len(tl) == 3
        b = views(tl, 1)
        assert a.keys() == b.keys()
        for i in a:
            assert torch.allclose(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    ev = list(create_loader(folder, 4, train=False, num_workers=0))
    assert [len(b.index) for b in ev] == [4, 4, 4, 4, 2]
