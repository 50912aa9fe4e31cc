"""Cache and data folders, source fingerprints and atomic array files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from unikd._atomic import atomic_write


def default_cache_dir() -> Path:
    """``$UNIKD_CACHE`` if set, else ``~/.cache/unikd``."""
    env = os.environ.get("UNIKD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unikd"


def default_data_root() -> Path:
    """Where downloads go when no ``root`` is given: ``$UNIKD_DATA`` if set, else ``~/.cache/unikd/data``."""
    env = os.environ.get("UNIKD_DATA")
    return Path(env).expanduser() if env else default_cache_dir() / "data"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_md5(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_fingerprint(root: Path) -> str:
    """sha256 of the sorted (relative path, size, mtime) listing of a folder.

    Reading every image of a large folder just to key a cache would cost as much as decoding it, so a
    folder is identified by its listing; an edited or touched file changes the key (and re-decodes).
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` (uncompressed: loading must be fast) to a temp file in the same folder, then rename,
    so a crash never leaves a half-written cache file that a later run would trust."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
