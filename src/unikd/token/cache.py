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

import hashlib
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

from .cache_read import KIND, PARTIAL, REBUILD, SparseTeacherCache, check_cache_temperature
from .sampled import sparse_sample
from .sparse import TAIL_FLOOR, SparseTeacher, check_sparse_teacher, sparse_topk

ARRAY = "tokens.npy"
PARTIAL_ARRAY = ".tokens.npy.partial"
MANIFEST = "manifest.json"
STORAGE_FIELDS = ("kind", "dtype", "k", "num_classes", "num_samples", "seq_len", "sampling", "temperature")
MODES = ("topk", "sample")


def _sequence_generator(seed: int, index: int) -> torch.Generator:
    """The draws of one sequence depend on (seed, sequence index) only: a build is the same whatever its
    batching, and a resumed build draws what an uninterrupted one would."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class SparseTeacherWriter:
    """Build (or resume) a sparse-teacher cache in ``folder``.

    ``mode="topk"`` stores the k largest log-probabilities and the tail bucket (:func:`sparse_topk`);
    ``mode="sample"`` stores k - 1 tokens drawn from the teacher plus a label slot, an unbiased estimate
    (:func:`~unikd.token.sampled.sparse_sample`; ``proposal_temperature``, and ``seed`` with each sequence's
    index seeding its draws). Both read back as the same :class:`SparseTeacher` records. ``temperature``
    (default 1) says which distribution the stored log-probabilities are of, ``softmax(z / temperature)``
    (imported log-probabilities, :mod:`unikd.token.import_logprobs`); it is kept in the manifest.

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
        mode: str = "topk",
        seed: int = 0,
        proposal_temperature: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        self.folder = Path(folder)
        self.temperature = check_cache_temperature(temperature)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "sample" and not isinstance(k, bool) and isinstance(k, int) and k < 2:
            raise ValueError(f"mode='sample' stores k - 1 draws plus a label slot: k must be >= 2, got {k}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.mode, self.seed, self.proposal_temperature = mode, seed, float(proposal_temperature)
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
                **(
                    {
                        "sampling": {
                            "draws": k - 1,
                            "proposal_temperature": self.proposal_temperature,
                            "seed": seed,
                        }
                    }
                    if mode == "sample"
                    else {}
                ),
                # only when not 1, so caches written before the field existed keep their identity
                **({"temperature": self.temperature} if self.temperature != 1.0 else {}),
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
        # every position, not only the first: a build killed inside a write leaves a row half written
        return torch.from_numpy(np.isnan(self.array["residual"][idx]).any(axis=1))

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

        ``teacher``: logits ``(B, seq_len, V)`` (top-k taken or tokens drawn here, with ``labels`` kept among
        the ids, see :func:`~unikd.token.sparse_topk`) or a :class:`SparseTeacher` ``(B, seq_len, k)``.
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
            sparse = self._sparse(idx, teacher, labels, ignore_index)
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

    def _sparse(self, idx: np.ndarray, logits: Tensor, labels: Tensor | None, ignore: int) -> SparseTeacher:
        if self.mode == "topk":
            return sparse_topk(logits, self.k, labels=labels, ignore_index=ignore)
        parts = [
            sparse_sample(
                logits[b],
                self.k - 1,
                labels=None if labels is None else labels[b],
                ignore_index=ignore,
                proposal_temperature=self.proposal_temperature,
                generator=_sequence_generator(self.seed, int(i)),
            )
            for b, i in enumerate(idx)
        ]
        fields = ("logprobs", "ids", "tail")
        return SparseTeacher(*(torch.stack([getattr(p, f) for p in parts]) for f in fields))

    def finish(self) -> Path:
        """Commit the array and write ``manifest.json`` (every sequence must have been written)."""
        if self.array is None:
            return self.folder
        missing = np.flatnonzero(np.isnan(self.array["residual"]).any(axis=1))
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


__all__ = ["SparseTeacherCache", "SparseTeacherWriter"]
