"""``imagefolder``: a folder or ``.tar``/``.tar.gz`` archive laid out as ``<split>/<class>/<image>``
(optionally under one top folder), decoded once with Pillow into a cached uint8 array.

The cache file holds every split of the source (an archive is read once, sequentially) plus the
train-split channel statistics; it is keyed by the source's content fingerprint and the resize option and
written atomically, so later runs start by reading one uncompressed ``.npz``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unikd._progress import progress, progress_enabled
from unikd.data.cache import atomic_savez, default_cache_dir, file_sha256, folder_fingerprint
from unikd.data.dataset import ArrayDataset, channel_stats, check_split, finish, parse_resize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}  # "val" folders serve as test (ImageNet)
CACHE_VERSION = 1
_RESIZE_FIX = "pass resize=(height, width) (config: data.image_size) to resize every image to one size"


def _norm(name: str) -> str:
    """Archive member names as relative paths: tar files made with ``tar czf x.tgz .`` prefix ``./``."""
    name = name.strip("/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def index_layout(paths: list[str], source: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Classes and, per split folder, the sorted (relative path, label) list of the images in ``paths``.

    Accepts ``<split>/<class>/<file>`` or ``<top>/<split>/<class>/<file>``; checks that the train and
    test folders exist and hold the same classes.
    """
    parts = [_norm(p).split("/") for p in paths if _is_image(p)]
    if not parts:
        raise ValueError(
            f"{source}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found; expected the layout "
            "<split>/<class>/<image>, e.g. train/cat/0001.jpg"
        )
    all_splits = {s for names in SPLIT_FOLDERS.values() for s in names}
    tops = {p[0] for p in parts}
    offset = 0
    if not tops & all_splits and len(tops) == 1:
        offset = 1  # one top folder, e.g. cifar10/train/...
    by_split: dict[str, dict[str, list[str]]] = {}
    for p in parts:
        q = p[offset:]
        if len(q) != 3:
            raise ValueError(
                f"{source}: image {'/'.join(p)!r} is not at <split>/<class>/<image>; move it or "
                "remove it (the layout is [top/]<split>/<class>/<image>)"
            )
        by_split.setdefault(q[0], {}).setdefault(q[1], []).append("/".join(p))
    found = {split: next((f for f in names if f in by_split), None) for split, names in SPLIT_FOLDERS.items()}
    missing = [s for s, f in found.items() if f is None]
    if missing:
        raise ValueError(
            f"{source}: no {' or '.join(repr(s) for s in missing)} split folder; found folders "
            f"{sorted(by_split)} (top folder stripped: {offset == 1}). Expected [top/]train/<class>/... "
            "and [top/]test/<class>/... (a 'val' folder is accepted as test)"
        )
    train_dir, test_dir = found["train"], found["test"]
    classes = sorted(by_split[train_dir])
    for a, b in ((train_dir, test_dir), (test_dir, train_dir)):
        extra = sorted(set(by_split[a]) - set(by_split[b]))
        if extra:
            raise ValueError(
                f"{source}: class folder(s) {extra} exist in {a!r} but not in {b!r}; every class "
                f"needs a folder in both splits (add {b}/{extra[0]}/ or remove {a}/{extra[0]}/)"
            )
    label = {c: i for i, c in enumerate(classes)}
    layout = {
        split: [(path, label[c]) for c in classes for path in sorted(by_split[folder][c])]
        for split, folder in (("train", train_dir), ("test", test_dir))
    }
    return classes, layout


def decode_image(data: bytes, name: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one image to uint8 (H, W) for grayscale or (H, W, 3) for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = img.convert("L") if img.mode in ("L", "1", "I", "I;16", "F", "LA") else img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.array(img, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"cannot decode image {name!r} ({type(err).__name__}: {err}); the file is corrupt or "
            "not an image: replace or delete it"
        ) from err


def _iter_sources(source: Path) -> tuple[list[str], Callable[[], Iterator[tuple[str, bytes]]]]:
    """All member paths of the source and a generator of (path, bytes) of its image files."""
    if source.is_dir():
        paths = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())

        def read_folder() -> Iterator[tuple[str, bytes]]:
            for rel in paths:
                if _is_image(rel):
                    yield rel, (source / rel).read_bytes()

        return paths, read_folder
    # An archive is read in one sequential pass (stream mode, also for .tar.gz) and kept as bytes: a second
    # pass just to list the members would cost as much as the read itself.
    entries: list[tuple[str, bytes]] = []
    bar = progress(desc=f"reading {source.name}", enabled=progress_enabled(), every=10_000)
    try:
        with tarfile.open(source, "r|*") as tf:
            for m in tf:
                if m.isfile() and _is_image(m.name):
                    f = tf.extractfile(m)
                    entries.append((m.name, f.read() if f is not None else b""))
                    bar.update()
        bar.close()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"imagefolder: {source} is not a readable .tar/.tar.gz archive ({err}); re-download "
            "or re-create it, or pass the extracted folder as root"
        ) from err
    return [name for name, _ in entries], lambda: iter(entries)


def decode_source(source: Path, size: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """Decode every image of the source; returns the arrays stored in the cache file."""
    paths, reader = _iter_sources(source)
    classes, layout = index_layout(paths, str(source))
    where = {path: (split, k) for split, items in layout.items() for k, (path, _) in enumerate(items)}
    decoded: dict[str, list[np.ndarray | None]] = {s: [None] * len(items) for s, items in layout.items()}
    first: tuple[str, tuple[int, ...]] | None = None
    bar = progress(reader(), total=len(where), desc=f"decoding {source.name} (once; cached)",
                   enabled=progress_enabled(), every=10_000)
    for name, data in bar:
        name = _norm(name)
        if name not in where:
            continue
        arr = decode_image(data, f"{source}/{name}" if source.is_dir() else f"{source}:{name}", size)
        if first is None:
            first = (name, arr.shape[:2])
        elif arr.shape[:2] != first[1]:
            raise ValueError(
                f"imagefolder {source}: images have different sizes: {first[0]!r} is "
                f"{first[1][1]}x{first[1][0]} but {name!r} is {arr.shape[1]}x{arr.shape[0]} (WxH); "
                f"{_RESIZE_FIX}"
            )
        split, k = where[name]
        decoded[split][k] = arr
    out: dict[str, np.ndarray] = {}
    rgb = any(a is not None and a.ndim == 3 for items in decoded.values() for a in items)
    for split, items in decoded.items():
        gone = [layout[split][k][0] for k, a in enumerate(items) if a is None]
        if gone:
            raise ValueError(
                f"imagefolder {source}: {gone[0]!r} is listed but could not be read; the archive is "
                "truncated or corrupt: re-create it"
            )
        if rgb:  # a grayscale image among colour ones becomes RGB, so that every sample has 3 channels
            items = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in items]
        x = np.stack(items)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        out[f"{split}_x"] = np.ascontiguousarray(x)
        out[f"{split}_y"] = np.array([lab for _, lab in layout[split]], dtype=np.int64)
    mean, std = channel_stats(out["train_x"])
    out.update(
        classes=np.array(classes), mean=np.array(mean), std=np.array(std), source=np.array(str(source))
    )
    return out


def cache_key(source: Path, size: tuple[int, int] | None) -> str:
    fp = folder_fingerprint(source) if source.is_dir() else file_sha256(source)
    blob = json.dumps({"v": CACHE_VERSION, "source": fp, "resize": size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_decoded(
    source: Path, size: tuple[int, int] | None, cache_dir: Path | None, part: str = "train"
) -> dict[str, np.ndarray]:
    """The decoded arrays (of split ``part`` plus classes and statistics), from the cache when present,
    else decoded (all splits) and written to the cache."""
    path = Path(cache_dir or default_cache_dir()) / "imagefolder" / f"{cache_key(source, size)[:32]}.npz"
    wanted = ("classes", "mean", "std", f"{part}_x", f"{part}_y")
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in wanted}
        except (OSError, ValueError, EOFError, KeyError) as err:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache file {path} ({err}); decoding again", stacklevel=3)
    arrays = decode_source(source, size)
    try:
        atomic_savez(path, arrays)
    except OSError as err:
        warnings.warn(
            f"could not write the decode cache {path} ({err}); set cache_dir= (or UNIKD_CACHE) to a "
            "writable folder to start faster next time",
            stacklevel=3,
        )
    return arrays


def load_imagefolder(
    root: str | Path | None = None,
    split: str = "train",
    *,
    cache_dir: str | Path | None = None,
    resize: int | tuple[int, int] | None = None,
    samples_per_class: int | None = None,
    val_split: int = 0,
    seed: int = 0,
    split_seed: int | None = None,
    download: bool = False,
) -> ArrayDataset:
    """ImageFolder dataset (folder or tar archive) decoded into memory; see the module docstring."""
    check_split(split)
    if root is None:
        raise ValueError(
            "imagefolder needs root=<folder or .tar/.tar.gz> laid out as [top/]<split>/<class>/<image>"
        )
    if download:
        raise ValueError("imagefolder cannot download; pass root= pointing at a local folder or archive")
    source = Path(root).expanduser()
    if not source.exists():
        raise ValueError(
            f"imagefolder root {source} does not exist; pass the folder or .tar/.tar.gz archive "
            "laid out as [top/]<split>/<class>/<image>"
        )
    size = parse_resize(resize)
    part = "test" if split == "test" else "train"
    arrays = load_decoded(source, size, Path(cache_dir).expanduser() if cache_dir else None, part)
    return finish(
        torch.from_numpy(arrays[f"{part}_x"]),
        arrays[f"{part}_y"],
        [str(c) for c in arrays["classes"]],
        split=split,
        name="imagefolder",
        mean=tuple(arrays["mean"].tolist()),
        std=tuple(arrays["std"].tolist()),
        val_split=val_split,
        samples_per_class=samples_per_class,
        seed=seed,
        split_seed=split_seed,
    )
