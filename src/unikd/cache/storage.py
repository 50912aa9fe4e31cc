"""On-disk format of the teacher-output cache: one memory-mapped ``.npy`` shard per epoch.

A cache folder holds ``manifest.json`` (written last, see :mod:`unikd.cache.manifest`) and one shard
``eNNNN.npy`` per cached epoch ``NNNN`` (the value given to ``train_loader.set_epoch``). Row ``i`` of a
shard holds the teacher output for dataset index ``i`` at that epoch, so a lookup is a plain row gather
and does not depend on batch order. Two storage modes:

``full``
    a ``(num_samples, num_classes)`` array of raw teacher logits in float16 (default) or float32.

``topk``
    a packed structured array with fields ``values`` (``k`` top log-probabilities, float16/float32),
    ``indices`` (their class ids; uint8 when ``num_classes <= 256``, else uint16/int32) and ``residual``
    (``log(1 - sum of the top-k probabilities)``, float16/float32). See :func:`decode_topk` for how the
    losses see it.

Shards are written to a temporary file in the same folder, flushed, fsynced and renamed, so a shard that
exists under its final name is complete. Rows that the training stream never visits at that epoch (for
example the tail dropped by ``drop_last``) stay NaN, and lookups of such rows fail loudly.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import numpy as np
import torch

from unikd._atomic import fsync_dir

FULL = "full"
TOPK = "topk"
MODES = (FULL, TOPK)
DTYPES = {"fp16": np.float16, "fp32": np.float32}
# Floor of the stored residual log-mass: keeps the rebuilt tail logits finite (an exactly-zero tail
# probability would turn p * log p into NaN inside KL-type losses); exp(-1e4) is 0 in float32 anyway.
MIN_LOG_RESIDUAL = -1.0e4


def shard_name(epoch: int) -> str:
    """File name of the shard holding epoch ``epoch`` (0-based, as passed to ``set_epoch``)."""
    return f"e{epoch:04d}.npy"


def index_dtype(num_classes: int) -> np.dtype:
    """Smallest unsigned integer type that holds every class id (1 byte for CIFAR-100)."""
    if num_classes <= 256:
        return np.dtype(np.uint8)
    if num_classes <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def shard_dtype(mode: str, dtype: str, num_classes: int, k: int | None) -> tuple[np.dtype, tuple[int, ...]]:
    """numpy dtype and per-row shape of one shard row for the given storage settings."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not a cache storage type; use one of {sorted(DTYPES)}")
    value = np.dtype(DTYPES[dtype])
    if mode == FULL:
        return value, (num_classes,)
    if mode == TOPK:
        if k is None or not 1 <= k < num_classes:
            raise ValueError(
                f"k={k!r} must satisfy 1 <= k < num_classes ({num_classes}) in top-k mode; "
                "store full logits instead when k would cover every class"
            )
        # Packed (align=False): the row costs exactly k*value + k*index + value bytes.
        row = np.dtype(
            [("values", value, (k,)), ("indices", index_dtype(num_classes), (k,)), ("residual", value)]
        )
        return row, ()
    raise ValueError(f"mode={mode!r} is not a cache storage mode; use one of {list(MODES)}")


def bytes_per_sample(mode: str, dtype: str, num_classes: int, k: int | None) -> int:
    """Bytes one (sample, epoch) entry costs on disk."""
    row, shape = shard_dtype(mode, dtype, num_classes, k)
    return row.itemsize * (math.prod(shape) if shape else 1)


def encode_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k log-probabilities, their class ids and the log of the remaining probability mass.

    logits: (B, C). Returns values (B, k) float32 sorted descending, indices (B, k) int64 and
    residual (B,) float32 = ``logsumexp`` of the other classes' log-probabilities, floored at
    ``MIN_LOG_RESIDUAL``. Computed in float32 whatever the teacher's precision.
    """
    logp = torch.log_softmax(logits.float(), dim=1)  # (B, C)
    values, indices = logp.topk(k, dim=1)  # (B, k)
    rest = logp.scatter(1, indices, float("-inf"))  # top-k masked out
    residual = torch.logsumexp(rest, dim=1).clamp_min(MIN_LOG_RESIDUAL)  # (B,)
    return values, indices, residual


def decode_topk(
    values: torch.Tensor, indices: torch.Tensor, residual: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Rebuild (B, C) float32 logits from the top-k encoding.

    The returned logits are log-probabilities: the k stored classes keep their teacher log-probability
    ``log p_i`` and every other class gets ``residual - log(C - k)``, i.e. the remaining mass spread
    uniformly. ``softmax`` of the result is therefore the teacher's distribution (at temperature 1) on
    the top-k classes and uniform on the tail; at a distillation temperature T the ratios between top-k
    classes are exact (a logit shift does not change softmax) and the tail stays flat.
    """
    values = values.float()
    batch, k = values.shape
    tail = residual.float() - math.log(num_classes - k)  # (B,)
    out = tail[:, None].expand(batch, num_classes).clone()  # (B, C)
    out.scatter_(1, indices.long(), values)
    return out


def encode_rows(logits: torch.Tensor, mode: str, dtype: str, k: int | None) -> np.ndarray:
    """Teacher logits (B, C) -> shard rows (numpy, ready to assign into a shard)."""
    num_classes = logits.shape[1]
    row, shape = shard_dtype(mode, dtype, num_classes, k)
    if mode == FULL:
        with np.errstate(over="ignore"):  # overflow is detected and reported just below
            out = logits.detach().float().cpu().numpy().astype(row)
        if not np.isfinite(out).all():
            bad = "non-finite teacher logits" if not torch.isfinite(logits).all() else (
                f"teacher logits beyond the {dtype} range (max |z| = {logits.abs().max().item():.4g})"
            )
            raise ValueError(f"cannot cache {bad}; use dtype='fp32' storage or check the teacher checkpoint")
        return out
    assert k is not None
    values, indices, residual = encode_topk(logits, k)
    out = np.empty(logits.shape[0], dtype=row)
    out["values"] = values.cpu().numpy()
    out["indices"] = indices.cpu().numpy()
    out["residual"] = residual.cpu().numpy()
    return out


def decode_rows(rows: np.ndarray, mode: str, num_classes: int) -> torch.Tensor:
    """Shard rows (numpy) -> (B, C) float32 logits on CPU (top-k rows rebuilt with :func:`decode_topk`)."""
    if mode == FULL:
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    return decode_topk(
        torch.from_numpy(np.ascontiguousarray(rows["values"], dtype=np.float32)),
        torch.from_numpy(rows["indices"].astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(rows["residual"], dtype=np.float32)),
        num_classes,
    )


def missing_rows(rows: np.ndarray, mode: str) -> np.ndarray:
    """Boolean mask of rows never written (still NaN)."""
    if mode == FULL:
        return np.isnan(rows).any(axis=1)
    return np.isnan(rows["residual"])


def open_shard_for_write(path: Path, row: np.dtype, shape: tuple[int, ...], num_samples: int) -> np.memmap:
    """A NaN-filled writable memmap at ``path`` (a temporary name; see :func:`commit_shard`)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=row, shape=(num_samples, *shape))
    _reserve(path)
    if row.names:
        for name in row.names:
            array[name] = 0 if name == "indices" else np.nan
    else:
        array[...] = np.nan
    return array


def _reserve(path: Path) -> None:
    """Allocate the memmap's blocks now: the file is sparse, and a full disk would otherwise surface as a
    SIGBUS (the process killed without a message) at the first write into an unallocated page. With the
    blocks reserved it is an ``OSError`` (ENOSPC) here, which the caller reports."""
    if not hasattr(os, "posix_fallocate"):  # pragma: no cover - not Linux
        return
    with open(path, "rb+") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return  # a filesystem without fallocate: nothing to reserve with
            raise OSError(exc.errno, exc.strerror, str(path)) from None


def commit_shard(array: np.memmap, tmp_path: Path, final_path: Path) -> None:
    """Flush and fsync the temporary shard, then atomically move it to its final name."""
    array.flush()
    with open(tmp_path, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp_path, final_path)
    fsync_dir(final_path.parent)


def open_shard(path: Path) -> np.ndarray:
    """Read-only memory map of a finished shard."""
    return np.load(path, mmap_mode="r", allow_pickle=False)
