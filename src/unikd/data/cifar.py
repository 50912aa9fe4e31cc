"""CIFAR-10 / CIFAR-100 from the official "python version" tarball or its extracted folder.

Format (https://www.cs.toronto.edu/~kriz/cifar.html): pickled dicts with bytes keys; ``b"data"`` is a
uint8 (N, 3072) array (1024 red, 1024 green, 1024 blue values per row, row-major 32x32), labels under
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100); class names in ``batches.meta`` /
``meta``. The pickles are read with an allow-list unpickler (numpy arrays and plain containers only), so
a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unikd.data.cache import default_data_root, file_md5
from unikd.data.dataset import ArrayDataset, check_split, finish, parse_resize


@dataclass(frozen=True)
class CifarSpec:
    name: str
    archive: str
    url: str
    md5: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def npz(self) -> str:
        """File name of the lossless ``.npz`` form (x_train, y_train, x_test, y_test, classes)."""
        return f"{self.name}.npz"


# Official URLs and md5 sums from https://www.cs.toronto.edu/~kriz/cifar.html. Mean/std: CIFAR-10 the
# exact train-set values, CIFAR-100 the values used by the CRD/DKD CIFAR-100 benchmark code.
SPECS = {
    "cifar10": CifarSpec(
        "cifar10",
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        b"labels",
        b"label_names",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        "cifar100",
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        b"fine_labels",
        b"fine_label_names",
        (0.5071, 0.4867, 0.4408),
        (0.2675, 0.2565, 0.2761),
    ),
}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch file")


def _unpickle(data: bytes, name: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # pickle raises many types on bad input
        raise ValueError(
            f"cannot read CIFAR batch {name!r} ({type(err).__name__}: {err}); the file is corrupt: "
            "delete it and download the official tarball again"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(
            f"CIFAR batch {name!r} does not hold a dict; it is not an official python-version file"
        )
    return obj


def _download(spec: CifarSpec, dest: Path) -> None:
    """Fetch the official tarball to ``dest`` (temp file + rename) and verify its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as r, open(tmp, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        tmp.unlink(missing_ok=True)
        raise ValueError(
            f"{spec.name}: download of {spec.url} failed ({err}). Offline? Fetch that file elsewhere "
            f"and put {spec.archive} at {dest}"
        ) from err
    got = file_md5(tmp)
    if got != spec.md5:
        tmp.unlink(missing_ok=True)
        raise ValueError(
            f"{spec.name}: downloaded {spec.archive} has md5 {got}, expected {spec.md5}; the download "
            "is damaged, try again"
        )
    tmp.replace(dest)


def _locate(spec: CifarSpec, root: Path | None, download: bool) -> Path:
    """The tarball, extracted folder or ``.npz`` for ``spec`` under or at ``root``."""
    base = Path(root).expanduser() if root is not None else default_data_root()
    if base.is_file():
        return base
    for cand in (base / spec.folder, base / spec.archive, base / spec.npz, base):
        if cand.is_dir() and (cand / spec.meta).is_file():
            return cand
        if cand.is_file():
            return cand
    if download:
        _download(spec, base / spec.archive)
        return base / spec.archive
    raise ValueError(
        f"{spec.name}: found neither {base / spec.archive}, the extracted folder {base / spec.folder} "
        f"nor {base / spec.npz}. Pass download=True (data.download=true) to fetch {spec.url}, or "
        f"download it yourself and put {spec.archive} in {base} (or pass root=<its path>)"
    )


def _read_members(spec: CifarSpec, source: Path) -> dict[str, bytes]:
    names = (*spec.train, *spec.test, spec.meta)
    if source.is_dir():
        out = {}
        for n in names:
            p = source / n
            if not p.is_file():
                raise ValueError(
                    f"{spec.name}: {p} is missing; the extracted folder must hold {', '.join(names)} "
                    f"(extract the official {spec.archive} again)"
                )
            out[n] = p.read_bytes()
        return out
    out = {}
    try:
        with tarfile.open(source, "r:*") as tf:
            for m in tf.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in names:
                    f = tf.extractfile(m)
                    out[base] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{spec.name}: {source} is not a readable tar archive ({err}); delete it and download "
            f"{spec.url} again (md5 {spec.md5})"
        ) from err
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(
            f"{spec.name}: archive {source} lacks {', '.join(missing)}; it is not the official "
            f"{spec.archive} (download {spec.url})"
        )
    return out


def _batch_arrays(
    spec: CifarSpec, blobs: dict[str, bytes], files: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for n in files:
        d = _unpickle(blobs[n], n)
        if b"data" not in d or spec.label_key not in d:
            raise ValueError(f"CIFAR batch {n!r} lacks b'data' or {spec.label_key!r}; is this {spec.name}?")
        x = np.asarray(d[b"data"], dtype=np.uint8)
        if x.ndim != 2 or x.shape[1] != 3072:
            raise ValueError(f"CIFAR batch {n!r}: data has shape {x.shape}, expected (N, 3072)")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[spec.label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _npz_arrays(
    spec: CifarSpec, path: Path, split: str, cache_dir: str | Path | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and class names of one official split from a lossless ``.npz`` copy."""
    from unikd.data.arrays import read_npz

    x, y, _, classes = read_npz(path, split, with_train_images=False, cache_dir=cache_dir)
    n_classes = 10 if spec.name == "cifar10" else 100
    if x.shape[1:] != (3, 32, 32):
        raise ValueError(
            f"{spec.name}: {path} holds images of shape {x.shape[1:]} (C, H, W), expected (3, 32, 32); "
            f"it is not {spec.name} (use data.name=npz for other arrays)"
        )
    if len(classes) != n_classes:
        raise ValueError(
            f"{spec.name}: {path} has {len(classes)} classes, expected {n_classes}; it is not {spec.name} "
            "(use data.name=npz for other arrays)"
        )
    return x, y, classes


def load_cifar(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    *,
    download: bool = False,
    resize: int | tuple[int, int] | None = None,
    samples_per_class: int | None = None,
    val_split: int = 0,
    seed: int = 0,
    split_seed: int | None = None,
    cache_dir: str | Path | None = None,
) -> ArrayDataset:
    """CIFAR-10 or CIFAR-100 (``name``) as an ArrayDataset.

    ``root`` is the official python tarball, its extracted folder, a lossless ``.npz`` (x_train, y_train,
    x_test, y_test uint8 arrays in the official splits, optional ``classes``) or a folder holding any of
    them (``cifar-100-python.tar.gz``, ``cifar-100-python/``, ``cifar100.npz``). Normalisation uses the
    benchmark's published mean/std whatever the source. ``cache_dir`` is unused (the data are already raw
    arrays) and accepted so every dataset takes the same options.
    """
    check_split(split)
    spec = SPECS[name]
    source = _locate(spec, Path(root) if root is not None else None, download)
    if source.is_file() and source.suffix == ".npz":
        x, y, classes = _npz_arrays(spec, source, split, cache_dir)
    else:
        blobs = _read_members(spec, source)
        meta = _unpickle(blobs[spec.meta], spec.meta)
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(spec.names_key, [])]
        x, y = _batch_arrays(spec, blobs, spec.test if split == "test" else spec.train)
    if not classes or int(y.max()) >= len(classes):
        raise ValueError(
            f"{spec.name}: {spec.meta} lists {len(classes)} class names but labels reach {int(y.max())}"
        )
    return finish(
        x,
        y,
        classes,
        split=split,
        name=name,
        mean=spec.mean,
        std=spec.std,
        val_split=val_split,
        samples_per_class=samples_per_class,
        seed=seed,
        split_seed=split_seed,
        resize=parse_resize(resize),
    )
