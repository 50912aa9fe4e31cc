"""create_dataset on tiny generated files: counts, label order, pixels, subsets, cache, errors."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import image_bytes, make_cifar, make_imagefolder, tar_folder

from unikd.data import create_dataset, imagefolder
from unikd.data.cifar import SPECS


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("source", ["archive", "folder", "parent"])
def test_cifar_counts_labels_pixels(tmp_path: Path, name: str, source: str) -> None:
    ref = make_cifar(tmp_path / "raw", name)
    root = {"archive": ref["archive"], "folder": ref["folder"], "parent": tmp_path / "raw"}[source]
    for split in ("train", "test"):
        ds = create_dataset(name, root=root, split=split)
        x, y = ref[f"{split}_x"], ref[f"{split}_y"]
        assert len(ds) == len(y) and ds.images.shape == (len(y), 3, 32, 32)
        assert torch.equal(ds.labels, torch.as_tensor(y, dtype=torch.int64))  # file order kept
        # Row layout: 1024 red, then green, then blue values, each 32x32 row-major.
        assert int(ds.images[1, 2, 3, 4]) == int(x[1, 2 * 1024 + 3 * 32 + 4])
        assert ds.classes == ref["classes"] and ds.num_classes == (10 if name == "cifar10" else 100)
        assert ds.mean == SPECS[name].mean and ds.std == SPECS[name].std


def test_cifar100_reference_statistics() -> None:
    assert SPECS["cifar100"].mean == (0.5071, 0.4867, 0.4408)
    assert SPECS["cifar100"].std == (0.2675, 0.2565, 0.2761)


def test_cifar_missing_names_file_url_and_place(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        create_dataset("cifar100", root=tmp_path / "nothing")
    msg = str(e.value)
    assert (
        "cifar-100-python.tar.gz" in msg and SPECS["cifar100"].url in msg and str(tmp_path / "nothing") in msg
    )


def test_cifar_download_offline_and_bad_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz") as e:
        create_dataset("cifar10", root=tmp_path, download=True)
    assert SPECS["cifar10"].url in str(e.value)

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: io.BytesIO(b"not the tarball"))
    with pytest.raises(ValueError, match="md5"):
        create_dataset("cifar10", root=tmp_path, download=True)
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()  # nothing half-verified is left behind


def test_cifar_download_verifies_and_uses_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = make_cifar(tmp_path / "raw")
    blob = ref["archive"].read_bytes()
    monkeypatch.setitem(
        SPECS,
        "cifar10",
        SPECS["cifar10"].__class__(**{**SPECS["cifar10"].__dict__, "md5": hashlib.md5(blob).hexdigest()}),
    )
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: io.BytesIO(blob))
    ds = create_dataset("cifar10", root=tmp_path / "dl", download=True, split="test")
    assert len(ds) == len(ref["test_y"]) and (tmp_path / "dl" / "cifar-10-python.tar.gz").is_file()


def test_cifar_corrupt_files(tmp_path: Path) -> None:
    ref = make_cifar(tmp_path / "raw")
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(ref["archive"].read_bytes()[:300])  # truncated download
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        create_dataset("cifar10", root=bad)
    (ref["folder"] / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        create_dataset("cifar10", root=ref["folder"])
    (ref["folder"] / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3.*missing"):
        create_dataset("cifar10", root=ref["folder"])


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "tar", "no-top"])
def test_imagefolder_layouts_counts_and_pixels(tmp_path: Path, cache_dir: Path, kind: str) -> None:
    ref = make_imagefolder(tmp_path / "src", top=None if kind == "no-top" else "set")
    root = tmp_path / "src"
    if kind.startswith("tar"):
        root = tar_folder(tmp_path / "src", tmp_path / f"d.{kind}", "w:gz" if kind == "tar.gz" else "w")
    train = create_dataset("imagefolder", root=root, cache_dir=cache_dir)
    test = create_dataset("imagefolder", root=root, split="test", cache_dir=cache_dir)
    assert (len(train), len(test)) == (12, 6) and train.images.shape[1:] == (3, 6, 5)
    assert train.classes == ["cat", "dog", "emu"]
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # class-major, sorted file names
    # PNG files are lossless: rows 0, 2 of each class are PNGs 00.png, 02.png.
    png = ref["pngs"]["train/dog/02.png"]
    assert np.array_equal(train.images[4 + 2].permute(1, 2, 0).numpy(), png)
    assert all(0 < m < 1 for m in train.mean) and train.mean == test.mean  # stats of the train split


def test_imagefolder_cache_hit_does_not_decode(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    make_imagefolder(tmp_path / "src")
    root = tar_folder(tmp_path / "src", tmp_path / "d.tar.gz")
    first = create_dataset("imagefolder", root=root, cache_dir=cache_dir)
    assert len(list((cache_dir / "imagefolder").glob("*.npz"))) == 1
    assert not list((cache_dir / "imagefolder").glob("*.tmp"))

    def fail(*a, **k):
        raise AssertionError("decoded again despite a cache file")

    monkeypatch.setattr(imagefolder, "decode_source", fail)
    again = create_dataset("imagefolder", root=root, cache_dir=cache_dir, split="train")
    assert torch.equal(first.images, again.images) and first.content_hash == again.content_hash
    # A different resize is a different cache entry, so it must decode (and here fails loudly).
    with pytest.raises(AssertionError, match="decoded again"):
        create_dataset("imagefolder", root=root, cache_dir=cache_dir, resize=4)


def test_imagefolder_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_imagefolder(tmp_path / "src")
    monkeypatch.setenv("UNIKD_CACHE", str(tmp_path / "envcache"))
    create_dataset("imagefolder", root=tmp_path / "src")
    assert list((tmp_path / "envcache" / "imagefolder").glob("*.npz"))


def test_imagefolder_errors(tmp_path: Path, cache_dir: Path) -> None:
    make_imagefolder(tmp_path / "a", counts={"train": 2, "valid": 2})
    with pytest.raises(ValueError, match="'test'.*valid"):
        create_dataset("imagefolder", root=tmp_path / "a", cache_dir=cache_dir)
    make_imagefolder(tmp_path / "b", skip=("test", "emu"))
    with pytest.raises(ValueError, match=r"\['emu'\].*'train' but not in 'test'"):
        create_dataset("imagefolder", root=tmp_path / "b", cache_dir=cache_dir)
    ref = make_imagefolder(tmp_path / "c")
    odd = ref["root"] / "set" / "test" / "dog" / "00.png"
    odd.write_bytes(image_bytes(np.zeros((9, 9, 3), np.uint8), "PNG"))
    with pytest.raises(ValueError, match="different sizes.*test/dog/00.png.*resize") as e:
        create_dataset("imagefolder", root=tmp_path / "c", cache_dir=cache_dir)
    assert "9x9" in str(e.value)
    ok = create_dataset("imagefolder", root=tmp_path / "c", cache_dir=cache_dir, resize=(7, 8))
    assert ok.images.shape[1:] == (3, 7, 8)
    (ref["root"] / "set" / "train" / "cat" / "01.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="train/cat/01.jpg.*corrupt"):
        create_dataset("imagefolder", root=tmp_path / "c", cache_dir=cache_dir, resize=(7, 8))
    with pytest.raises(ValueError, match="does not exist"):
        create_dataset("imagefolder", root=tmp_path / "missing")
    (tmp_path / "x.tar.gz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="x.tar.gz.*not a readable"):
        create_dataset("imagefolder", root=tmp_path / "x.tar.gz", cache_dir=cache_dir)


def test_imagefolder_archive_without_splits(tmp_path: Path, cache_dir: Path) -> None:
    d = tmp_path / "flat" / "cat"
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(image_bytes(np.zeros((4, 4, 3), np.uint8), "PNG"))
    arc = tmp_path / "flat.tar"
    with tarfile.open(arc, "w") as tf:
        tf.add(tmp_path / "flat", arcname="flat")
    with pytest.raises(ValueError, match="flat.tar.*<split>/<class>/<image>"):
        create_dataset("imagefolder", root=arc, cache_dir=cache_dir)


def test_npz_grayscale_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = tmp_path / "m.npz"
    xs = rng.integers(0, 256, (30, 7, 7), dtype=np.uint8)
    ys = np.repeat(np.arange(3), 10).astype(np.uint8)
    np.savez(p, x_train=xs, y_train=ys, x_test=xs[:9], y_test=ys[:9])
    ds = create_dataset("npz", root=p)
    assert (
        ds.images.shape == (30, 1, 7, 7) and ds.labels.dtype == torch.int64 and ds.classes == ["0", "1", "2"]
    )
    assert abs(ds.mean[0] - xs.mean() / 255) < 1e-9
    assert len(create_dataset("npz", root=p, split="test")) == 9
    np.savez(tmp_path / "bad.npz", x_train=xs, y_train=ys)
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['x_test', 'y_test'\]"):
        create_dataset("npz", root=tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz"):
        create_dataset("npz", root=tmp_path / "junk.npz")


def test_digits() -> None:
    pytest.importorskip("sklearn")
    tr, te = create_dataset("digits"), create_dataset("digits", split="test")
    assert (len(tr), len(te)) == (1442, 355) and tr.images.shape[1:] == (1, 8, 8)
    assert int(tr.images.max()) == 255 and int(tr.images.min()) == 0
    assert torch.equal(create_dataset("digits").images, tr.images)  # deterministic split


def test_val_split_and_samples_per_class(tmp_path: Path) -> None:
    ref = make_cifar(tmp_path, "cifar10", per_batch=40)
    kw = {"root": ref["archive"], "val_split": 2, "seed": 3}
    full = create_dataset("cifar10", root=ref["archive"])
    tr, va = create_dataset("cifar10", **kw), create_dataset("cifar10", split="val", **kw)
    assert len(tr) + len(va) == len(full)
    assert torch.bincount(va.labels, minlength=10).tolist() == [2] * 10
    key = lambda ds: {bytes(x.numpy()) for x in ds.images}  # noqa: E731
    assert not key(tr) & key(va)  # disjoint
    assert torch.equal(create_dataset("cifar10", split="val", **kw).images, va.images)  # same seed, same part
    other = create_dataset("cifar10", split="val", root=ref["archive"], val_split=2, seed=4)
    assert not torch.equal(other.images, va.images)
    sub = create_dataset("cifar10", samples_per_class=3, **kw)
    assert torch.bincount(sub.labels, minlength=10).max() <= 3
    assert key(sub) <= key(tr)
    assert len({full.content_hash, tr.content_hash, va.content_hash, sub.content_hash}) == 4
    with pytest.raises(ValueError, match="val_split"):
        create_dataset("cifar10", root=ref["archive"], split="val")


def test_factory_errors() -> None:
    with pytest.raises(ValueError, match="Did you mean 'cifar100'"):
        create_dataset("cifar1000")
    with pytest.raises(ValueError, match="did you mean 'samples_per_class'"):
        create_dataset("digits", samples_per_clas=3)
    with pytest.raises(ValueError, match="split must be one of"):
        create_dataset("digits", split="training")
