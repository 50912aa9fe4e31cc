"""``npz`` (arrays x_train, y_train, x_test, y_test) and ``digits`` (scikit-learn's bundled 8x8 digits)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from unikd.data.dataset import ArrayDataset, channel_stats, check_split, finish, parse_resize, to_nchw

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


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


def load_npz(
    root: str | Path | None = None,
    split: str = "train",
    *,
    resize: int | tuple[int, int] | None = None,
    samples_per_class: int | None = None,
    val_split: int = 0,
    seed: int = 0,
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
    path = Path(root).expanduser()
    if not path.is_file():
        raise ValueError(
            f"npz file {path} does not exist; pass root=<file.npz> with x_train, y_train, x_test, y_test"
        )
    try:
        if not zipfile.is_zipfile(path):
            raise OSError("not a zip archive")
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            arrays = {k: z[k] for k in (*NPZ_KEYS, "classes") if k in files}
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise ValueError(
            f"cannot read npz file {path} ({err}); it is corrupt or not an .npz: re-create it with np.savez"
        ) from err
    missing = [k for k in NPZ_KEYS if k not in files]
    if missing:
        raise ValueError(
            f"npz file {path} lacks array(s) {missing} (it has {files}); save it with "
            "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    x_train = to_nchw(_as_uint8(arrays["x_train"], f"{path}:x_train"), f"{path}:x_train")
    part = "test" if split == "test" else "train"
    x = (
        x_train
        if part == "train"
        else to_nchw(_as_uint8(arrays["x_test"], f"{path}:x_test"), f"{path}:x_test")
    )
    y_train = _as_labels(arrays["y_train"], f"{path}:y_train")
    y_test = _as_labels(arrays["y_test"], f"{path}:y_test")
    y = y_train if part == "train" else y_test
    if len(y) != len(x):
        raise ValueError(f"{path}: x_{part} has {len(x)} images but y_{part} has {len(y)} labels")
    if x.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"{path}: x_test images are {x.shape[1:]} but x_train images are {x_train.shape[1:]}"
        )
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    classes = (
        [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(num_classes)]
    )
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
        resize=parse_resize(resize),
    )
