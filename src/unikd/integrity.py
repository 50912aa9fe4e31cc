"""Checksums of every file unikd writes and later reads back, and their verification.

One sha256 per file, stored **inside** the file it protects, so the atomic write that puts a file in place
puts its checksum in place with it (a sidecar file could be left behind by a crash between the two
renames). A reader that finds a mismatch raises :class:`IntegrityError` naming the file and what to do.

Where each kind of file keeps its checksum:

``torch.save`` archives (``last.pt``, ``best.pt``, ``last.prev.pt``)
    the zip archive comment, ``unikd-sha256:<64 hex digits>``. The digest covers the archive as
    ``torch.save`` wrote it (comment length 0); zip readers, ``torch.load`` included, ignore the comment.
safetensors files (``student.safetensors``)
    ``__metadata__["unikd.sha256"]``, over the header without that entry (as canonical JSON: sorted keys,
    no spaces) followed by the tensor bytes, so other safetensors readers load the file unchanged.
JSON documents (teacher-cache manifests)
    a top-level ``"checksum"`` entry over the canonical JSON of the rest.
anything else (teacher-cache shards)
    the plain file sha256, recorded in the manifest that lists the file (:func:`verify_file`).

No downgrade: a file that unikd writes and reads back as its own -- a checkpoint whose payload is marked
as sealed (``version >= 2``), a safetensors file with the ``unikd.integrity`` metadata mark, every cache
manifest and every shard a manifest lists -- must carry its checksum. One without it was truncated,
re-saved or edited: :func:`absent` makes the error (the same :class:`IntegrityError` as a mismatch), so
removing the checksum never turns a refusal into a warning.

Foreign files (a plain ``state_dict``, a torchvision or HF file, a unikd 0.1.0 checkpoint, written before
checksums) carry none and cannot carry one: :func:`unverified` loads them with a one-time warning, or,
inside ``with policy("strict")`` (the config option ``integrity=strict``), refuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

from unikd._files import require_regular_file

log = logging.getLogger("unikd")

HEX_LEN = 64
ZIP_MAGIC = b"unikd-sha256:"
SAFETENSORS_KEY = "unikd.sha256"
SAFETENSORS_MARK = "unikd.integrity"  # "sha256": this file was written with its checksum (see absent())
POLICIES = ("lenient", "strict")
JSON_KEY = "checksum"
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_TRAILER = len(ZIP_MAGIC) + HEX_LEN
_CHUNK = 1 << 20
_warned: set[str] = set()
# A context variable, not a parameter: the policy must reach every load under train()/cache-teacher
# (teacher weights, resume, caches) without threading an argument through each layer.
_STRICT: ContextVar[bool] = ContextVar("unikd_integrity_strict", default=False)


class IntegrityError(ValueError):
    """A file does not match the checksum written with it: it was damaged (or edited) after it was written."""


def _sha256_prefix(path: str | os.PathLike[str], end: int | None) -> Any:
    digest = hashlib.sha256()
    left = end
    with open(require_regular_file(path, "file"), "rb") as fh:  # never block on a FIFO
        while left is None or left > 0:
            block = fh.read(_CHUNK if left is None else min(_CHUNK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    return _sha256_prefix(path, None).hexdigest()


def crc32_file(path: str | os.PathLike[str]) -> int:
    """CRC-32 of a file's bytes (the checksum a zip archive records for each member)."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def mismatch(path: str | os.PathLike[str], what: str, fix: str) -> IntegrityError:
    return IntegrityError(
        f"{what} {str(path)!r} is damaged: its content does not match the sha256 checksum written with it "
        f"(a disk, copy or transfer error changed it after it was written). {fix}".rstrip()
    )


def absent(path: str | os.PathLike[str], what: str, fix: str, *, where: str = "") -> IntegrityError:
    """The error for a file unikd wrote as its own that lacks its checksum (``where``: where it was kept)."""
    kept = f" {where}" if where else ""
    return IntegrityError(
        f"{what} {str(path)!r} is damaged: it carries no sha256 checksum{kept}, although unikd writes one "
        f"for every {what} (it was truncated, re-saved or edited after it was written). {fix}".rstrip()
    )


@contextlib.contextmanager
def policy(mode: str) -> Iterator[None]:
    """``integrity=lenient|strict`` for the loads inside the block (strict: refuse unverifiable files)."""
    if mode not in POLICIES:
        raise ValueError(f"integrity={mode!r} is not valid; use one of {', '.join(POLICIES)}")
    token = _STRICT.set(mode == "strict")
    try:
        yield
    finally:
        _STRICT.reset(token)


def strict() -> bool:
    return _STRICT.get()


def unverified(path: str | os.PathLike[str], what: str, *, resave: str = "") -> None:
    """A foreign file without a checksum: warn once (lenient), or refuse it (``integrity=strict``)."""
    if _STRICT.get():
        raise IntegrityError(
            f"{what} {str(path)!r} carries no unikd checksum (another tool, or unikd 0.1.0, wrote it), so "
            "its integrity cannot be verified and integrity=strict refuses it. Check where it came from, "
            f"then set integrity=lenient to load it with a warning{f', or {resave}' if resave else ''}."
        )
    warn_unverified(path, what)


def warn_unverified(path: str | os.PathLike[str], what: str) -> None:
    """Say once per file that it carries no unikd checksum (older unikd or another tool wrote it)."""
    key = str(Path(path).resolve())
    if key not in _warned:
        _warned.add(key)
        log.warning("%s %s carries no unikd checksum (written by an older unikd or another tool), so its "
                    "integrity cannot be verified; re-save it with this unikd to add one", what, path)


# ------------------------------------------------------------------------------- torch.save archives


class HashingWriter:
    """A write-only file wrapper that hashes what passes through and keeps the first ``OSError``.

    ``torch.save`` turns an ``OSError`` of the file object (disk full, ...) into an opaque ``RuntimeError``;
    the caller re-raises :attr:`error` instead. ``torch.save`` writes archives sequentially (no seeks);
    this wrapper has no ``seek``, so a future version that needed one would fail loudly, not hash wrongly.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.digest = hashlib.sha256()
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            n = self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise
        self.digest.update(data)
        return n

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise


def seal_zip(f: IO[bytes], writer: HashingWriter) -> None:
    """Store ``writer``'s digest as the comment of the zip archive it just wrote into ``f`` (at its end)."""
    f.flush()
    size = f.seek(0, os.SEEK_END)
    f.seek(size - _EOCD_SIZE)
    eocd = f.read(_EOCD_SIZE)
    if eocd[:4] != _EOCD or eocd[20:22] != b"\0\0":
        raise ValueError("cannot store a checksum: the archive does not end with an empty-comment zip record")
    f.seek(size - 2)
    f.write(struct.pack("<H", _TRAILER) + ZIP_MAGIC + writer.digest.hexdigest().encode("ascii"))


def verify_zip(path: str | os.PathLike[str], *, what: str = "checkpoint", fix: str = "") -> bool:
    """Check the archive comment checksum of a ``torch.save`` file.

    Returns True when it matches, False when the file carries none (a foreign file, or one truncated or
    re-saved: the caller decides which, see :func:`absent`); raises :class:`IntegrityError` on a mismatch.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < _EOCD_SIZE + _TRAILER:
        return False
    with open(path, "rb") as fh:
        fh.seek(size - _EOCD_SIZE - _TRAILER)
        tail = fh.read()
    eocd, magic, stored = tail[:_EOCD_SIZE], tail[_EOCD_SIZE:-HEX_LEN], tail[-HEX_LEN:]
    if magic != ZIP_MAGIC:
        return False
    if eocd[:4] != _EOCD or struct.unpack("<H", eocd[20:22])[0] != _TRAILER:
        raise mismatch(path, what, fix)
    digest = _sha256_prefix(path, size - _TRAILER - 2)
    digest.update(b"\0\0")  # the comment length torch.save wrote
    if digest.hexdigest().encode("ascii") != stored:
        raise mismatch(path, what, fix)
    return True


# ------------------------------------------------------------------------------- safetensors headers


def safetensors_digest(header: Mapping[str, Any], data: bytes | memoryview | list[bytes]) -> str:
    """The checksum of a safetensors file: canonical header (without the checksum entry) + tensor bytes."""
    head = dict(header)
    meta = dict(head.get("__metadata__") or {})
    meta.pop(SAFETENSORS_KEY, None)
    if meta:
        head["__metadata__"] = meta
    else:
        head.pop("__metadata__", None)
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for part in data if isinstance(data, list) else [data]:
        digest.update(part)
    return digest.hexdigest()


def verify_safetensors(path: str | os.PathLike[str], header: Mapping[str, Any], data: bytes | memoryview,
                       *, what: str = "safetensors file", fix: str = "") -> bool:
    """True when the stored checksum matches, False when there is none; :class:`IntegrityError` otherwise."""
    stored = (header.get("__metadata__") or {}).get(SAFETENSORS_KEY)
    if stored is None:
        return False
    if stored != safetensors_digest(header, data):
        raise mismatch(path, what, fix)
    return True


# ------------------------------------------------------------------------------- JSON documents


def _json_digest(obj: Mapping[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k != JSON_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def seal_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` plus its ``"checksum"`` entry (write the result with any JSON formatting)."""
    body = {k: v for k, v in obj.items() if k != JSON_KEY}
    return {**body, JSON_KEY: _json_digest(body)}


def verify_json(obj: Mapping[str, Any], path: str | os.PathLike[str], *, what: str, fix: str = "") -> bool:
    """True when the ``"checksum"`` entry matches, False when absent; :class:`IntegrityError` otherwise."""
    stored = obj.get(JSON_KEY)
    if stored is None:
        return False
    if stored != _json_digest(obj):
        raise mismatch(path, what, fix)
    return True


# ------------------------------------------------------------------------------- files listed elsewhere


def verify_file(path: str | os.PathLike[str], expected: str | None, *, what: str, fix: str = "") -> bool:
    """Compare a file's sha256 with the one recorded where it is listed (True), else :class:`IntegrityError`.

    Only unikd lists files with their sha256 (cache manifests), so a listing without one is damage too.
    """
    if expected is None:
        raise absent(path, what, fix, where="in the manifest that lists it")
    if sha256_file(path) != expected:
        raise mismatch(path, what, fix)
    return True
