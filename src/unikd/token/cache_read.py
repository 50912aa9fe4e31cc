"""The read side of the sparse-teacher cache: :class:`SparseTeacherCache` (the format: :mod:`.cache`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unikd import integrity
from unikd.cache import storage
from unikd.cache.manifest import CacheMismatchError, check_identity, normalise, read_manifest

from .sparse import SparseTeacher

KIND = "token_topk"
PARTIAL = "manifest.partial.json"
# How these caches are built in general (unikd lm-distill sparse_teacher.* builds the LM example's).
REBUILD = (
    "rebuild it with unikd.token.SparseTeacherWriter(folder, ..., overwrite=True) over the teacher's "
    "outputs (docs/token.md)"
)


def check_cache_temperature(value: object) -> float:
    """The temperature of cached log-probabilities: a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < float("inf"):
        raise ValueError(f"temperature must be a positive finite number, got {value!r}")
    return float(value)


class SparseTeacherCache:
    """A complete sparse-teacher cache, opened read-only: ``cache.read(index)`` -> :class:`SparseTeacher`.

    ``read(index)`` returns the records of sequences ``index`` ``(B,)`` as float32 log-probabilities, int64
    ids and tails of shape ``(B, seq_len, k)`` / ``(B, seq_len)`` on ``device``. ``temperature`` is the one
    the log-probabilities are of (``softmax(z / temperature)``; 1 unless the writer said otherwise).
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
        self.temperature = float(manifest.get("temperature", 1.0))
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


__all__ = ["SparseTeacherCache", "check_cache_temperature"]
