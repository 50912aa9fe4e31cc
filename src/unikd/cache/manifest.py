"""The cache manifest: what a cache was built from, and the checks that keep stale logits out.

``manifest.json`` is written last, after every shard is in place, so its presence means the cache is
complete. While a build runs, ``manifest.partial.json`` records the same identity so an interrupted build
can be resumed (finished shards are kept) and a folder is never silently reused for another run.

Identity fields (any difference means the cached logits are not the ones a live teacher would produce):

- ``teacher_model``, ``teacher_sha256``: the architecture and the sha256 of the checkpoint file;
- ``dropped_classes`` (only when ``data.drop_classes`` removed some): the classes missing from the
  training set; listed before the dataset hash, which they change too, so a mismatch names the cause;
- ``transfer`` (only with ``data.transfer``): the transfer set's source, split, size and image format;
  listed before the dataset hash for the same reason;
- ``dataset_hash``, ``num_samples``, ``num_classes``: the training set (``ArrayDataset.content_hash``);
- ``seed``: the loader seed, which fixes every epoch's order and every view;
- ``batch_size``, ``world_size``: the composition of each teacher forward pass (floating-point results
  of a batched forward may depend on it in the last bits);
- ``augment_signature``: ``train_loader.augment_signature()`` (crop, flip, mixup/cutmix, ...);
- ``device_type``, ``precision``, ``channels_last``: how the teacher forward is computed.

Integrity: both manifests carry a ``checksum`` of their own content, and every finished shard's sha256 is
recorded in them (``shards``: ``[{"epoch", "file", "bytes", "sha256"}]``); the reader verifies the manifest
when it opens a cache and each shard before its first use (:mod:`unikd.integrity`). Only unikd writes
manifests, so a manifest without its checksum, or a listed shard without its sha256, is damage: refused,
never read with a warning (caches are cheap to rebuild; trusting a stripped manifest is not safe).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from unikd import integrity
from unikd._atomic import atomic_write_text
from unikd._files import require_regular_file
from unikd.integrity import sha256_file  # noqa: F401  (the teacher checkpoint's identity; re-exported)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.json"
IDENTITY_FIELDS = (
    "teacher_model",
    "teacher_sha256",
    "dropped_classes",
    "transfer",
    "dataset_hash",
    "num_samples",
    "num_classes",
    "seed",
    "batch_size",
    "world_size",
    "augment_signature",
    "device_type",
    "precision",
    "channels_last",
)
STORAGE_FIELDS = ("mode", "dtype", "k")


class CacheMismatchError(ValueError):
    """A teacher cache does not match the run (or build) that wants to use it."""


def identity_key(identity: dict[str, Any], storage: dict[str, Any]) -> str:
    """A short stable hash of identity + storage, used to name default cache folders."""
    blob = json.dumps({"identity": identity, "storage": storage}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def normalise(value: Any) -> Any:
    """JSON round trip, so tuples/lists and int/float keys compare the way they are stored."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


REBUILD = "rebuild it with 'unikd cache-teacher' (pass --overwrite to replace it in place)"


def read_manifest(folder: Path, name: str = MANIFEST, *, rebuild: str = REBUILD) -> dict[str, Any] | None:
    """The manifest dict, or None when the file does not exist; clear errors for foreign/corrupt files.

    unikd writes every manifest with its checksum, so one without it is refused as damaged (a manifest of
    unikd 0.1.0 included: caches are rebuilt, not trusted). ``rebuild`` says how to rebuild the cache (the
    teacher caches of ``unikd cache-teacher`` by default; token caches pass their own).
    """
    path = Path(folder) / name
    if not path.exists():
        return None
    what = "teacher cache manifest"
    try:
        data = json.loads(require_regular_file(path, what).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} {path} is unreadable ({exc}); delete the folder, or {rebuild}") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:  # first: another format may keep its checksum elsewhere
        raise ValueError(
            f"teacher cache {path} has format_version={version!r} but this unikd reads version "
            f"{FORMAT_VERSION}; {rebuild}"
        )
    fix = f"Delete the folder, or {rebuild}."
    if not integrity.verify_json(data, path, what=what, fix=fix):
        raise integrity.absent(path, what, fix + " (Caches built by unikd 0.1.0, before checksums, "
                               "are refused the same way.)")
    return data


def write_manifest(obj: dict[str, Any], path: Path) -> None:
    """Write a manifest atomically, with its checksum."""
    atomic_write_text(path, json.dumps(integrity.seal_json(obj), indent=2, sort_keys=True) + "\n")


def _describe_difference(cached: Any, run: Any) -> tuple[Any, Any]:
    """For dicts, only the keys that differ (the augmentation signature has many)."""
    if isinstance(cached, dict) and isinstance(run, dict):
        keys = sorted(set(cached) | set(run))
        diff = [k for k in keys if cached.get(k, "<absent>") != run.get(k, "<absent>")]
        return ({k: cached.get(k, "<absent>") for k in diff}, {k: run.get(k, "<absent>") for k in diff})
    return cached, run


def check_identity(
    cached: dict[str, Any],
    run: dict[str, Any],
    *,
    where: Path,
    fix: str,
    fields: tuple[str, ...] = IDENTITY_FIELDS,
) -> None:
    """Raise :class:`CacheMismatchError` naming the first field where ``cached`` and ``run`` differ."""
    for field in fields:
        want = normalise(run.get(field))
        have = normalise(cached.get(field))
        if have != want:
            have_d, want_d = _describe_difference(have, want)
            raise CacheMismatchError(
                f"teacher cache {where} does not match this run: field {field!r} is {have_d!r} in the cache "
                f"but {want_d!r} for this run. {fix}"
            )


def check_epochs(manifest: dict[str, Any], epochs_needed: int, *, where: Path, fix: str) -> None:
    """A run of ``epochs_needed`` epochs reads shards 0..epochs_needed-1; all must be cached."""
    cached = int(manifest.get("epochs", 0))
    if epochs_needed > cached:
        raise CacheMismatchError(
            f"teacher cache {where} does not match this run: field 'epochs' is {cached} in the cache but "
            f"this run trains {epochs_needed} epochs (more than cached). {fix}"
        )
