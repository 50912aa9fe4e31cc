"""The token ids beside a sparse-teacher cache: which sequence each cached row was computed on.

A cache row is only the teacher's answer for the tokens it read. ``input_ids.npy`` (``(num_sequences,
seq_len)`` int32, ``-1`` after a sequence's end) records those tokens, so a trainer reading the cache can
check, example by example, that it feeds the student the same tokens (not another tokenization, order or
split). ``input_ids.json`` holds the array's shape and sha256, verified when it is read.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from unikd import integrity
from unikd._atomic import atomic_write, atomic_write_text

TOKENS_ARRAY = "input_ids.npy"
TOKENS_MANIFEST = "input_ids.json"
PAD = -1  # after a sequence's end


def write_cache_token_ids(folder: str | Path, input_ids: Tensor | np.ndarray) -> Path:
    """Write ``input_ids`` ``(num_sequences, seq_len)`` (``-1`` marks positions after a sequence's end) into
    the cache ``folder``, atomically, with its checksum; replaces an earlier one."""
    folder = Path(folder)
    ids = input_ids.detach().cpu().numpy() if isinstance(input_ids, Tensor) else np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"input_ids must be an integer array (num_sequences, seq_len), got {ids.dtype} {ids.shape}"
        )
    if ids.size and int(ids.min()) < PAD:
        raise ValueError(f"input_ids hold {int(ids.min())}; token ids are >= 0, and -1 marks padding")
    buf = io.BytesIO()
    np.save(buf, ids.astype(np.int32))
    folder.mkdir(parents=True, exist_ok=True)
    path = atomic_write(folder / TOKENS_ARRAY, lambda f: f.write(buf.getvalue()))
    meta = {"shape": list(ids.shape), "sha256": integrity.sha256_file(path)}
    atomic_write_text(folder / TOKENS_MANIFEST, json.dumps(meta, indent=2) + "\n")
    return path


def read_cache_token_ids(folder: str | Path) -> np.ndarray | None:
    """The token ids :func:`write_cache_token_ids` stored in ``folder`` (a read-only memory map), or None
    when the cache has none; a damaged array is refused (``IntegrityError`` naming the file)."""
    folder = Path(folder)
    meta_path, path = folder / TOKENS_MANIFEST, folder / TOKENS_ARRAY
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    fix = f"Write it again with unikd.token.write_cache_token_ids({str(folder)!r}, input_ids)."
    integrity.verify_file(path, meta.get("sha256"), what="sparse-teacher cache token ids", fix=fix)
    ids = np.load(path, mmap_mode="r")
    if list(ids.shape) != list(meta.get("shape", [])):
        raise ValueError(f"{path} has shape {ids.shape} but {meta_path} says {meta.get('shape')}. {fix}")
    return ids


def token_ids_tensor(ids: np.ndarray, index: np.ndarray) -> Tensor:
    """Rows ``index`` of a token-id array as int64 ``(B, seq_len)``."""
    return torch.from_numpy(np.asarray(ids[index], dtype=np.int64))


__all__ = [
    "PAD",
    "TOKENS_ARRAY",
    "TOKENS_MANIFEST",
    "read_cache_token_ids",
    "token_ids_tensor",
    "write_cache_token_ids",
]
