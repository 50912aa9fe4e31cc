"""A teacher-output cache for language models: a :class:`SparseTeacher` per (sequence, token position).

Built on the storage and manifest primitives of :mod:`unikd.cache` (the packed top-k record of ``k``
log-probabilities, ``k`` ids and one residual, NaN-filled memory maps committed with fsync + rename,
atomic JSON manifests, identity checks naming the differing field). Language-model data has no augmentation,
so there is one array ``tokens.npy`` of shape ``(num_sequences, seq_len)`` records, indexed by the dataset
index of each sequence; the record's residual is the tail bucket.

Writing is resumable: records go into ``.tokens.npy.partial`` (identity in ``manifest.partial.json``); an
interrupted build reopens it and :meth:`SparseTeacherWriter.pending` says which sequences are still
missing. :meth:`SparseTeacherWriter.finish` requires every sequence, then commits the array and writes
``manifest.json`` last. Unwritten records stay NaN and reading one is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unikd import integrity
from unikd.cache import storage
from unikd.cache.manifest import (
    FORMAT_VERSION,
    CacheMismatchError,
    check_identity,
    normalise,
    read_manifest,
    write_manifest,
)

from .sparse import TAIL_FLOOR, SparseTeacher, check_sparse_teacher, sparse_topk

KIND = "token_topk"
ARRAY = "tokens.npy"
PARTIAL_ARRAY = ".tokens.npy.partial"
MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.json"
STORAGE_FIELDS = ("kind", "dtype", "k", "num_classes", "num_samples", "seq_len")
# How these caches are built: no command line builds them ('unikd cache-teacher' builds image caches).
REBUILD = (
    "rebuild it with unikd.token.SparseTeacherWriter(folder, ..., overwrite=True) over the teacher's "
    "outputs (docs/token.md)"
)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class SparseTeacherWriter:
    """Build (or resume) a sparse-teacher cache in ``folder``.

    ``identity`` (a JSON-able dict: teacher model and checkpoint hash, dataset, tokenizer, ...) is stored and
    compared when the cache is reopened or read; a folder holding another identity or other storage
    settings is never reused silently (:class:`~unikd.cache.CacheMismatchError`, or ``overwrite=True``).

    Use as a context manager or call :meth:`finish`::

        with SparseTeacherWriter(folder, num_sequences=N, seq_len=T, vocab_size=V, k=64,
                                 identity={...}) as w:
            for index, input_ids, labels in batches:
                if not w.pending(index).any():
                    continue
                w.write(index, teacher(input_ids).logits, labels=labels)
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        num_sequences: int,
        seq_len: int,
        vocab_size: int,
        k: int,
        identity: dict[str, Any],
        dtype: str = "fp16",
        overwrite: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.num_sequences = _positive(num_sequences, "num_sequences")
        self.seq_len = _positive(seq_len, "seq_len")
        self.vocab_size = _positive(vocab_size, "vocab_size")
        self.k = _positive(k, "k")
        if not isinstance(identity, dict) or not identity:
            raise ValueError("identity must be a non-empty dict saying what the cached outputs come from")
        self.row, _ = storage.shard_dtype(storage.TOPK, dtype, vocab_size, k)
        self.header = normalise(
            {
                "format_version": FORMAT_VERSION,
                "kind": KIND,
                "mode": storage.TOPK,
                "dtype": dtype,
                "k": k,
                "num_classes": vocab_size,
                "num_samples": num_sequences,
                "seq_len": seq_len,
                "bytes_per_token": self.row.itemsize,
                "identity": identity,
            }
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        self._open(overwrite)

    def _open(self, overwrite: bool) -> None:
        partial_path = self.folder / PARTIAL_ARRAY
        fix = "Point the writer at another folder, or pass overwrite=True to replace it."
        try:
            for name in (MANIFEST, PARTIAL):
                found = read_manifest(self.folder, name, rebuild=REBUILD)
                if found is not None:
                    check_identity(found, self.header, where=self.folder, fix=fix, fields=STORAGE_FIELDS)
                    check_identity(
                        found["identity"],
                        self.header["identity"],
                        where=self.folder,
                        fix=fix,
                        fields=tuple(sorted(set(found["identity"]) | set(self.header["identity"]))),
                    )
        except ValueError:  # another run's cache (CacheMismatchError), or a damaged/unreadable manifest
            if not overwrite:
                raise
            for name in (MANIFEST, PARTIAL, ARRAY, PARTIAL_ARRAY):
                (self.folder / name).unlink(missing_ok=True)
        if (self.folder / MANIFEST).exists() and (self.folder / ARRAY).exists():
            self.array = None  # complete already: nothing pending
            return
        shape = (self.num_sequences, self.seq_len)
        if partial_path.exists():
            self.array = np.lib.format.open_memmap(partial_path, mode="r+")
            if self.array.dtype != self.row or self.array.shape != shape:
                raise CacheMismatchError(
                    f"{partial_path} holds {self.array.dtype} records of shape {self.array.shape}, expected "
                    f"{self.row} x {shape}; delete it or pass overwrite=True"
                )
        else:
            self.array = storage.open_shard_for_write(
                partial_path, self.row, (self.seq_len,), self.num_sequences
            )
        write_manifest({**self.header, "complete": False}, self.folder / PARTIAL)

    @property
    def complete(self) -> bool:
        return self.array is None

    def pending(self, index: Tensor) -> Tensor:
        """Bool ``(B,)``: which of these sequences are not written yet (all False once complete)."""
        idx = self._index(index)
        if self.array is None:
            return torch.zeros(len(idx), dtype=torch.bool)
        return torch.from_numpy(np.isnan(self.array["residual"][idx, 0]))

    def _index(self, index: Tensor) -> np.ndarray:
        idx = torch.as_tensor(index).detach().cpu().numpy().astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_sequences):
            raise ValueError(
                f"index holds sequence indices outside 0..{self.num_sequences - 1} (min {idx.min()}, max "
                f"{idx.max()})"
            )
        return idx

    def write(
        self,
        index: Tensor,
        teacher: Tensor | SparseTeacher,
        *,
        labels: Tensor | None = None,
        ignore_index: int = -100,
    ) -> None:
        """Store the teacher outputs of sequences ``index`` ``(B,)``.

        ``teacher``: logits ``(B, seq_len, V)`` (top-k taken here, with ``labels`` kept in the top-k, see
        :func:`~unikd.token.sparse_topk`) or a :class:`SparseTeacher` ``(B, seq_len, k)``.
        """
        if self.array is None:
            raise RuntimeError(f"the cache in {self.folder} is complete; open a new writer to rebuild it")
        idx = self._index(index)
        layout = (len(idx), self.seq_len)
        if isinstance(teacher, Tensor):
            if tuple(teacher.shape) != (*layout, self.vocab_size):
                raise ValueError(
                    "teacher logits must have shape (B, seq_len, vocab_size) = "
                    f"{(*layout, self.vocab_size)}, got {tuple(teacher.shape)}"
                )
            sparse = sparse_topk(teacher, self.k, labels=labels, ignore_index=ignore_index)
        else:
            if teacher.k != self.k:
                raise ValueError(f"the sparse teacher has k={teacher.k} but this cache stores k={self.k}")
            sparse = teacher
        flat = check_sparse_teacher(sparse.to("cpu"), layout, self.vocab_size)
        rows = np.empty(flat.tail.shape[0], dtype=self.row)
        rows["values"] = flat.logprobs.float().clamp_min(TAIL_FLOOR).numpy()
        rows["indices"] = flat.ids.numpy()
        rows["residual"] = flat.tail.float().clamp_min(TAIL_FLOOR).numpy()
        self.array[idx] = rows.reshape(layout)

    def finish(self) -> Path:
        """Commit the array and write ``manifest.json`` (every sequence must have been written)."""
        if self.array is None:
            return self.folder
        missing = np.flatnonzero(np.isnan(self.array["residual"][:, 0]))
        if missing.size:
            raise ValueError(
                f"{missing.size} of {self.num_sequences} sequences were never written (e.g. indices "
                f"{missing[:8].tolist()}); write them, then call finish() again (the partial cache is kept)"
            )
        final = self.folder / ARRAY
        storage.commit_shard(self.array, self.folder / PARTIAL_ARRAY, final)
        self.array = None
        manifest = {
            **self.header,
            "complete": True,
            "file": ARRAY,
            "bytes": final.stat().st_size,
            "sha256": integrity.sha256_file(final),
        }
        write_manifest(manifest, self.folder / MANIFEST)
        (self.folder / PARTIAL).unlink(missing_ok=True)
        return self.folder

    def __enter__(self) -> SparseTeacherWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.finish()
        elif self.array is not None:
            self.array.flush()  # keep what was written: the next writer resumes from it


class SparseTeacherCache:
    """A complete sparse-teacher cache, opened read-only: ``cache.read(index)`` -> :class:`SparseTeacher`.

    ``read(index)`` returns the records of sequences ``index`` ``(B,)`` as float32 log-probabilities, int64
    ids and tails of shape ``(B, seq_len, k)`` / ``(B, seq_len)`` on ``device``.
    """

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu") -> None:
        self.folder = Path(folder)
        self.device = torch.device(device)
        manifest = read_manifest(self.folder, rebuild=REBUILD) if self.folder.is_dir() else None
        if manifest is None:
            partial = self.folder.is_dir() and (
                read_manifest(self.folder, PARTIAL, rebuild=REBUILD) is not None
            )
            raise ValueError(
                f"{self.folder} is not a complete sparse-teacher cache"
                + (
                    " (its build was interrupted: resume it with SparseTeacherWriter)"
                    if partial
                    else " (no manifest.json); build one with SparseTeacherWriter"
                )
            )
        if manifest.get("kind") != KIND:
            raise ValueError(
                f"{self.folder} holds a teacher cache of kind {manifest.get('kind')!r}, not {KIND!r}"
            )
        self.manifest = manifest
        self.k = int(manifest["k"])
        self.vocab_size = int(manifest["num_classes"])
        self.num_sequences = int(manifest["num_samples"])
        self.seq_len = int(manifest["seq_len"])
        path = self.folder / manifest["file"]
        fix = f"Delete the folder, or {REBUILD}."
        integrity.verify_file(path, manifest.get("sha256"), what="sparse-teacher cache array", fix=fix)
        self.array = storage.open_shard(path)

    @property
    def identity(self) -> dict[str, Any]:
        return self.manifest["identity"]

    def check(self, identity: dict[str, Any]) -> None:
        """Raise :class:`~unikd.cache.CacheMismatchError` naming the first field where the cache's identity
        differs from ``identity`` (every key of either side is compared)."""
        fields = tuple(sorted(set(self.identity) | set(identity)))
        check_identity(
            self.identity,
            normalise(identity),
            where=self.folder,
            fields=fields,
            fix="Rebuild it with SparseTeacherWriter for this teacher and data.",
        )

    def read(self, index: Tensor) -> SparseTeacher:
        idx = torch.as_tensor(index).detach().cpu().numpy().astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_sequences):
            raise ValueError(
                f"index holds sequence indices outside 0..{self.num_sequences - 1} "
                f"(min {idx.min()}, max {idx.max()})"
            )
        rows = self.array[idx]  # (B, seq_len) records, a copy
        if np.isnan(rows["residual"]).any():
            raise CacheMismatchError(
                f"sparse-teacher cache {self.folder} has unwritten records for sequences {idx}"
            )
        out = SparseTeacher(
            torch.from_numpy(rows["values"].astype(np.float32)),
            torch.from_numpy(rows["indices"].astype(np.int64)),
            torch.from_numpy(rows["residual"].astype(np.float32)),
        )
        return out.to(self.device)

    __call__ = read


__all__ = ["SparseTeacherCache", "SparseTeacherWriter"]
