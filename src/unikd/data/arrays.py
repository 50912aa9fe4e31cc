"""``npz`` (arrays x_train, y_train, x_test, y_test) and ``digits`` (scikit-learn's bundled 8x8 digits)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np

from unikd._atomic import atomic_write
from unikd.data.cache import default_cache_dir
from unikd.data.dataset import ArrayDataset, channel_stats, check_split, finish, parse_resize, to_nchw
from unikd.integrity import crc32_file

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
log = logging.getLogger("unikd")


def _as_uint8(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) and x.size and (x.min() < 0 or x.max() > 255):
        raise ValueError(
            f"{where}: integer pixels must lie in 0..255, got {x.min()}..{x.max()}; store uint8 images"
        )
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(
            f"{where}: images must be uint8 (0..255), got {x.dtype}; convert them with "
            "(x * 255).round().astype(np.uint8) if they are floats in [0, 1]"
        )
    return x.astype(np.uint8)


def _as_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Class indices: integers >= 0 (float labels would be truncated silently, so they are refused)."""
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        hint = (" (they are whole numbers: store them with y.astype(np.int64))"
                if np.issubdtype(y.dtype, np.floating) and y.size and np.all(np.isfinite(y))
                and np.all(y == np.round(y)) else
                "; unikd trains on class indices (mixup/cutmix make soft labels on the fly)")
        raise ValueError(f"{where}: labels must be integer class indices, got dtype {y.dtype}{hint}")
    if y.size and y.min() < 0:
        raise ValueError(f"{where}: class indices must be >= 0, got {y.min()}")
    return y.astype(np.int64).reshape(-1)


def _npz_members(path: Path, names: tuple[str, ...], cache_dir: str | Path | None) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` (only those are decompressed).

    Compressed members are decompressed once into ``cache_dir/npz/<key>/NAME.npy`` (key: the file's path,
    size and mtime) and memory-mapped from there afterwards: a compressed CIFAR-100 costs seconds to inflate,
    and every run (train, validation and test splits) would pay it again. The cached file holds the member's
    bytes exactly, so the CRC-32 the zip records for the member is its checksum; a cached file that does
    not match it is inflated again.
    """
    try:
        if not zipfile.is_zipfile(path):
            raise OSError("not a zip archive")
        with zipfile.ZipFile(path) as zf:
            members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        folder = folder / "npz" / key
        out: dict[str, np.ndarray] = {}
        with np.load(path, allow_pickle=False) as z:
            for name in names:
                info = members.get(name)
                if info is None:
                    continue
                cached = folder / f"{name}.npy"
                if info.compress_type == zipfile.ZIP_STORED or name == "classes":
                    out[name] = z[name]
                    continue
                if cached.is_file():
                    if crc32_file(cached) == info.CRC:
                        out[name] = np.load(cached, allow_pickle=False)
                        continue
                    log.warning("decompressed npz cache %s is damaged (CRC mismatch); inflating it again",
                                cached)
                    cached.unlink(missing_ok=True)
                arr = z[name]
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    atomic_write(cached, lambda f, i=info: shutil.copyfileobj(z.zip.open(i), f, 1 << 20))
                except OSError:
                    pass  # a read-only cache folder only costs speed
                out[name] = arr
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise ValueError(
            f"cannot read npz file {path} ({err}); it is corrupt or not an .npz: re-create it with np.savez"
        ) from err
    return out


def read_npz(
    path: str | Path, split: str, *, with_train_images: bool = True, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """``(x, y, x_train, classes)`` of one part (train or test) of an ``.npz`` with x_train, y_train,
    x_test, y_test (optional ``classes``): images as uint8 (N, C, H, W), labels as int64.

    ``x_train`` is returned too (None unless ``with_train_images``) because normalisation statistics come
    from the training images.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(
            f"npz file {path} does not exist; pass root=<file.npz> with x_train, y_train, x_test, y_test"
        )
    part = "test" if split == "test" else "train"
    wanted = ("y_train", "y_test", "classes", f"x_{part}")
    if with_train_images:
        wanted += ("x_train",)
    arrays = _npz_members(path, wanted, cache_dir)
    with zipfile.ZipFile(path) as zf:
        files = [i.filename[:-4] for i in zf.infolist() if i.filename.endswith(".npy")]
    missing = [k for k in NPZ_KEYS if k not in files]
    if missing:
        raise ValueError(
            f"npz file {path} lacks array(s) {missing} (it has {files}); save it with "
            "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    x = to_nchw(_as_uint8(np.asarray(arrays[f"x_{part}"]), f"{path}:x_{part}"), f"{path}:x_{part}")
    x_train = None
    if with_train_images:
        x_train = x if part == "train" else to_nchw(
            _as_uint8(np.asarray(arrays["x_train"]), f"{path}:x_train"), f"{path}:x_train"
        )
        if x.shape[1:] != x_train.shape[1:]:
            raise ValueError(
                f"{path}: x_test images are {x.shape[1:]} but x_train images are {x_train.shape[1:]}"
            )
    y_train = _as_labels(arrays["y_train"], f"{path}:y_train")
    y_test = _as_labels(arrays["y_test"], f"{path}:y_test")
    y = y_train if part == "train" else y_test
    if len(y) != len(x):
        raise ValueError(f"{path}: x_{part} has {len(x)} images but y_{part} has {len(y)} labels")
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    classes = (
        [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(num_classes)]
    )
    return x, y, x_train, classes


def load_npz(
    root: str | Path | None = None,
    split: str = "train",
    *,
    resize: int | tuple[int, int] | None = None,
    samples_per_class: int | None = None,
    val_split: int = 0,
    seed: int = 0,
    split_seed: int | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
) -> ArrayDataset:
    """An ``.npz`` file with ``x_train, y_train, x_test, y_test`` (optional ``classes``).

    Images may be (N, H, W) grayscale, (N, H, W, C) or (N, C, H, W) uint8; mean/std come from x_train.
    """
    check_split(split)
    if root is None or download:
        raise ValueError(
            "npz needs root=<file.npz> holding x_train, y_train, x_test, y_test (it cannot download)"
        )
    x, y, x_train, classes = read_npz(root, split, cache_dir=cache_dir)
    mean, std = channel_stats(x_train)
    return finish(
        x,
        y,
        classes,
        split=split,
        name="npz",
        mean=mean,
        std=std,
        val_split=val_split,
        samples_per_class=samples_per_class,
        seed=seed,
        split_seed=split_seed,
        resize=parse_resize(resize),
    )


def load_digits(
    root: str | Path | None = None,
    split: str = "train",
    *,
    resize: int | tuple[int, int] | None = None,
    samples_per_class: int | None = None,
    val_split: int = 0,
    seed: int = 0,
    split_seed: int | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
) -> ArrayDataset:
    """scikit-learn's 1797 8x8 digits as (N, 1, 8, 8) uint8 (0..16 scaled to 0..255).

    Fixed stratified split: within each class, every 5th sample (in the bundled order) is test, so
    1442 train / 355 test images, the same on every machine.
    """
    check_split(split)
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:
        raise ValueError(
            "the digits dataset needs scikit-learn: pip install scikit-learn (or pip install 'unikd[demo]')"
        ) from err
    bunch = sk_load_digits()
    x = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = np.asarray(bunch.target, dtype=np.int64)
    is_test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(y == c)
        is_test[members[4::5]] = True
    mean, std = channel_stats(x[~is_test])
    sel = is_test if split == "test" else ~is_test
    return finish(
        x[sel],
        y[sel],
        [str(i) for i in range(10)],
        split=split,
        name="digits",
        mean=mean,
        std=std,
        val_split=val_split,
        samples_per_class=samples_per_class,
        seed=seed,
        split_seed=split_seed,
        resize=parse_resize(resize),
    )
