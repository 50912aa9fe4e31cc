"""Writers of tiny dataset files (in tmp_path): CIFAR pickles in the official format, ImageFolder trees
and archives with JPEG and PNG files."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def _pickle_bytes(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)  # the official batches are Python-2 era protocol-2 pickles


def make_cifar(folder: Path, name: str = "cifar10", per_batch: int = 6, seed: int = 0) -> dict:
    """Write the official python-version tree (and its .tar.gz) under ``folder``; return the arrays."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        sub, train, test, meta = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "batches.meta",
        )
        label_key, names_key, n_cls = b"labels", b"label_names", 10
        archive = "cifar-10-python.tar.gz"
    else:
        sub, train, test, meta = "cifar-100-python", ["train"], ["test"], "meta"
        label_key, names_key, n_cls = b"fine_labels", b"fine_label_names", 100
        archive = "cifar-100-python.tar.gz"
    root = folder / sub
    root.mkdir(parents=True)
    arrays: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for part, files in (("train", train), ("test", test)):
        for f in files:
            n = per_batch * (5 if name == "cifar100" and part == "train" else 1)
            x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, n_cls, size=n)]
            d = {b"batch_label": f.encode(), b"data": x, label_key: y, b"filenames": [b"x.png"] * n}
            (root / f).write_bytes(_pickle_bytes(d))
            arrays[f"{part}_x"].append(x)
            arrays[f"{part}_y"].extend(y)
    class_names = [f"class_{i:03d}".encode() for i in range(n_cls)]
    (root / meta).write_bytes(_pickle_bytes({names_key: class_names}))
    with tarfile.open(folder / archive, "w:gz") as tf:
        tf.add(root, arcname=sub)
    out = {k: (np.concatenate(v) if k.endswith("_x") else np.array(v)) for k, v in arrays.items()}
    out.update(folder=root, archive=folder / archive, classes=[c.decode() for c in class_names])
    return out


def image_bytes(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_imagefolder(
    folder: Path,
    *,
    classes=("cat", "dog", "emu"),
    counts=None,
    size=(6, 5),
    top: str | None = "set",
    seed: int = 0,
    skip: tuple[str, str] | None = None,
) -> dict:
    """Write <top>/<split>/<class>/<i>.(png|jpg); PNG for even i (lossless), JPEG for odd i."""
    counts = counts or {"train": 4, "test": 2}
    rng = np.random.default_rng(seed)
    base = folder / top if top else folder
    pngs: dict[str, np.ndarray] = {}
    for split, n in counts.items():
        for c in classes:
            if skip == (split, c):
                continue
            d = base / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
                fmt = "PNG" if i % 2 == 0 else "JPEG"
                p = d / f"{i:02d}.{'png' if fmt == 'PNG' else 'jpg'}"
                p.write_bytes(image_bytes(arr, fmt))
                if fmt == "PNG":
                    pngs[f"{split}/{c}/{p.name}"] = arr
    return {"root": folder, "pngs": pngs, "classes": list(classes)}


def tar_folder(folder: Path, dest: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(dest, mode) as tf:
        for child in sorted(folder.iterdir()):
            tf.add(child, arcname=child.name)
    return dest
