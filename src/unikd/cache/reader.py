"""Read a teacher-output cache: per-batch lookups of cached logits by (epoch, dataset index).

Integrity: opening a cache verifies its manifest's checksum and that every listed shard has the recorded
size (a truncated shard fails at once); each shard's sha256 is verified when it is first opened, before
any of its logits is used. A mismatch, or a missing checksum or shard record, raises
:class:`~unikd.integrity.IntegrityError` naming the file.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unikd import integrity
from unikd.cache import storage
from unikd.cache.manifest import (
    MANIFEST,
    PARTIAL,
    CacheMismatchError,
    check_epochs,
    check_identity,
    read_manifest,
)

# Shards kept open at once: training reads one epoch at a time; two covers the epoch boundary.
OPEN_SHARDS = 2


class TeacherCache:
    """A complete cache folder, opened read-only.

    Call it like the live teacher, ``cache(images, epoch, index)``: ``images`` is ignored and the result is
    the cached (B, C) float32 logits of dataset rows ``index`` at loader epoch ``epoch``, on ``device``.
    Full-logit caches return the stored logits (float16 storage is widened to float32); top-k caches return
    the logits rebuilt by :func:`unikd.cache.storage.decode_topk`.
    """

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu") -> None:
        self.folder = Path(folder)
        self.device = torch.device(device)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"teacher cache folder {self.folder} does not exist; build it with "
                f"'unikd cache-teacher CONFIG.yaml --out {self.folder}' or fix teacher.cache"
            )
        manifest = read_manifest(self.folder)
        if manifest is None:
            partial = read_manifest(self.folder, PARTIAL)
            if partial is not None:
                raise ValueError(
                    f"teacher cache {self.folder} is incomplete (its build was interrupted); run "
                    f"'unikd cache-teacher CONFIG.yaml --out {self.folder}' again to finish it"
                )
            raise ValueError(
                f"{self.folder} is not a teacher cache (no {MANIFEST}); build one with 'unikd cache-teacher'"
            )
        self.manifest: dict[str, Any] = manifest
        self.mode: str = manifest["mode"]
        self.num_classes = int(manifest["num_classes"])
        self.num_samples = int(manifest["num_samples"])
        self.epochs = int(manifest["epochs"])
        self._shards: OrderedDict[int, np.ndarray] = OrderedDict()
        self._entries = {int(s["epoch"]): s for s in manifest.get("shards") or [] if isinstance(s, dict)}
        self._fix = (f"Rebuild it: delete {self.folder} (or pass --overwrite) and run 'unikd cache-teacher' "
                     "with the run's config; finished runs keep their checkpoints.")
        self._check_sizes()

    def _check_sizes(self) -> None:
        """A shard whose size differs from the manifest's record is damaged (typically truncated)."""
        for epoch, entry in sorted(self._entries.items()):
            path = self.folder / str(entry.get("file", storage.shard_name(epoch)))
            size = path.stat().st_size if path.exists() else None
            if size is not None and entry.get("bytes") is not None and size != int(entry["bytes"]):
                raise integrity.IntegrityError(
                    f"teacher cache shard {path} is damaged: {size} bytes, but the manifest recorded "
                    f"{entry['bytes']} (truncated or overwritten). {self._fix}"
                )

    def verify(self, epochs: range | None = None) -> None:
        """Verify the sha256 of every shard (of ``epochs``) now, instead of at each shard's first use."""
        for epoch in epochs if epochs is not None else range(self.epochs):
            self._verify_shard(epoch, self.folder / storage.shard_name(epoch))

    def _verify_shard(self, epoch: int, path: Path) -> None:
        # The manifest verified, and unikd records every shard's sha256 in it: none recorded is damage too.
        sha = (self._entries.get(epoch) or {}).get("sha256")
        integrity.verify_file(path, sha, what="teacher cache shard", fix=self._fix)

    @property
    def identity(self) -> dict[str, Any]:
        """What the cache was built from (see :mod:`unikd.cache.manifest`)."""
        return self.manifest["identity"]

    def check(self, run_identity: dict[str, Any], epochs_needed: int, *, fix: str | None = None) -> None:
        """Raise :class:`CacheMismatchError` unless this cache serves a run with this identity and length."""
        fix = fix or (
            "Rebuild it for this run with 'unikd cache-teacher CONFIG.yaml [overrides] --out DIR' using the "
            "same config and overrides as 'unikd train', then set teacher.cache=DIR."
        )
        check_identity(self.identity, run_identity, where=self.folder, fix=fix)
        check_epochs(self.manifest, epochs_needed, where=self.folder, fix=fix)

    def _shard(self, epoch: int) -> np.ndarray:
        if epoch in self._shards:
            self._shards.move_to_end(epoch)
            return self._shards[epoch]
        if not 0 <= epoch < self.epochs:
            raise CacheMismatchError(
                f"teacher cache {self.folder} holds epochs 0..{self.epochs - 1} but epoch {epoch} was "
                f"requested; rebuild it with more epochs ('unikd cache-teacher ... --epochs {epoch + 1}')"
            )
        path = self.folder / storage.shard_name(epoch)
        if not path.exists():
            raise FileNotFoundError(
                f"teacher cache shard {path} is missing although the manifest lists it; rebuild the cache "
                "with 'unikd cache-teacher'"
            )
        self._verify_shard(epoch, path)
        try:
            self._shards[epoch] = storage.open_shard(path)
        except (OSError, ValueError, EOFError) as exc:  # a verified shard that numpy cannot map
            raise ValueError(f"teacher cache shard {path} is unreadable ({exc}). {self._fix}") from exc
        while len(self._shards) > OPEN_SHARDS:
            self._shards.popitem(last=False)
        return self._shards[epoch]

    def logits(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """Cached (B, C) float32 logits of dataset indices ``index`` (int64, any device) at ``epoch``."""
        idx = index.detach().cpu().numpy().astype(np.int64, copy=False)
        if idx.ndim != 1:
            raise ValueError(f"index must be a 1-D tensor of dataset indices, got shape {tuple(index.shape)}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_samples):
            raise ValueError(
                f"index holds dataset indices outside 0..{self.num_samples - 1} (min {idx.min()}, max "
                f"{idx.max()}); the cache was built for a training set of {self.num_samples} samples"
            )
        rows = self._shard(int(epoch))[idx]  # a copy: fancy indexing of a memmap gathers the rows
        missing = storage.missing_rows(rows, self.mode)
        if missing.any():
            raise CacheMismatchError(
                f"teacher cache {self.folder} has no logits for dataset indices {idx[missing][:8].tolist()} "
                f"at epoch {epoch}: the build's training stream never visited them (e.g. another batch size "
                "with drop_last); rebuild it with this run's config"
            )
        out = storage.decode_rows(rows, self.mode, self.num_classes)
        return out.to(self.device, non_blocking=True)

    def __call__(self, images: torch.Tensor | None, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """Teacher-compatible call: ``images`` is ignored (the views are keyed by (epoch, index))."""
        return self.logits(epoch, index)
