"""Checkpoint I/O: atomic writes, safe loads (``weights_only=True``) and a dependency-free safetensors codec.

Atomicity: every file is written to a temporary file in the destination folder, flushed and fsynced, then
moved over the destination with ``os.replace`` (atomic on POSIX and Windows). A run killed at any moment
therefore leaves either the previous file or the new one, never a truncated one.

The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian unsigned header
length ``N``, ``N`` bytes of JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets"}`` (offsets
relative to the byte buffer that follows the header) plus an optional ``"__metadata__"`` dict of strings,
then the raw little-endian tensor bytes. We write it ourselves so that the package stays optional.

Integrity: every file written here carries a sha256 checksum that the loaders verify (see
:mod:`unikd.integrity`): a damaged file raises :class:`~unikd.integrity.IntegrityError` naming it, instead
of loading wrong weights. Files without a checksum (older unikd, other tools) load with a warning.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unikd import integrity
from unikd._atomic import atomic_write

CHECKPOINT_FORMAT = "unikd-checkpoint"

_ST_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        _ST_DTYPES[getattr(torch, _name)] = _code
_ST_CODES = {code: dtype for dtype, code in _ST_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # same sanity limit as the reference implementation


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``),
    with its sha256 in the archive comment (:func:`unikd.integrity.seal_zip`).

    A failed write (disk full, ...) raises the underlying ``OSError`` naming ``path``, not torch's opaque
    ``RuntimeError``; the previous file at ``path`` is untouched.
    """

    def write(f: Any) -> None:
        writer = integrity.HashingWriter(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise
        integrity.seal_zip(f, writer)

    return atomic_write(path, write)


def _require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what} {str(path)!r} does not exist; check the path (and the run's out_dir)"
        )
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder, expected a file (e.g. {path / 'best.pt'})")
    return path


DAMAGED_CHECKPOINT_FIX = (
    "Use another checkpoint of the run (resume=auto falls back from last.pt to last.prev.pt; best.pt holds "
    "the best epoch) or copy the file again from a good source."
)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a ``torch.save`` file with ``weights_only=True`` (no arbitrary code runs on load).

    The checksum written by :func:`atomic_save` is verified first; a file without one loads with a
    warning (:func:`unikd.integrity.warn_unverified`).

    Raises:
        FileNotFoundError: the file does not exist.
        unikd.integrity.IntegrityError: (a ``ValueError``) the file does not match its checksum.
        ValueError: the file is truncated/corrupt, not a PyTorch file, or holds objects other than
            tensors and plain containers.
    """
    path = _require_file(path, "checkpoint")
    verified = integrity.verify_zip(path, what="checkpoint", fix=DAMAGED_CHECKPOINT_FIX)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise ValueError(
                f"checkpoint {str(path)!r} contains Python objects other than tensors and plain containers, "
                "so it cannot be loaded safely with weights_only=True; re-save only its state_dict "
                f"(torch.save(model.state_dict(), ...)). Details: {str(e).splitlines()[0]}"
            ) from None
        raise ValueError(f"checkpoint {str(path)!r} is not a valid PyTorch file ({e})") from None
    except Exception as e:  # corrupt files surface as many types (RuntimeError, KeyError, EOFError, ...)
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        if zipfile.is_zipfile(path):
            # A well-formed archive: the problem is elsewhere (e.g. map_location="cuda" without a GPU).
            raise ValueError(f"checkpoint {str(path)!r} could not be loaded: {detail}") from e
        size = path.stat().st_size
        raise ValueError(
            f"checkpoint {str(path)!r} ({size} bytes) is truncated or not a PyTorch checkpoint: {detail}. "
            "If a run was killed while writing, use the previous checkpoint (unikd writes atomically, so "
            "last.pt/best.pt stay valid)."
        ) from None
    if not verified:
        integrity.warn_unverified(path, "checkpoint")
    return obj


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` to ``path`` in the safetensors format, atomically.

    Tensors are copied to CPU and made contiguous; shared storage is written once per name (the format
    has no aliasing). ``metadata`` must map strings to strings.
    """
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        raise RuntimeError("save_safetensors only supports little-endian machines")
    if not isinstance(tensors, Mapping):
        raise ValueError(f"tensors must be a mapping name -> Tensor, got {type(tensors).__name__}")
    header: dict[str, Any] = {}
    if metadata:
        bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise ValueError(f"safetensors metadata must map str to str; convert these entries: {bad}")
        header["__metadata__"] = dict(metadata)
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid safetensors tensor name {name!r}")
        if not isinstance(t, Tensor):
            raise ValueError(f"tensors[{name!r}] is a {type(t).__name__}, expected a torch.Tensor")
        if t.dtype not in _ST_DTYPES:
            raise ValueError(f"tensors[{name!r}] has dtype {t.dtype}, which safetensors cannot store")
        t = t.detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    # The checksum covers the header without itself plus the tensor bytes (unikd.integrity).
    digest = integrity.safetensors_digest(header, blobs)
    header["__metadata__"] = {**header.get("__metadata__", {}), integrity.SAFETENSORS_KEY: digest}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # pad so the data starts 8-byte aligned, as the reference writer does

    def write(f: Any) -> None:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)

    return atomic_write(path, write)


def _read_safetensors(path: Path) -> tuple[dict[str, Any], memoryview]:
    data = path.read_bytes()
    bad = f"{str(path)!r} is not a valid safetensors file"
    if len(data) < 8:
        raise ValueError(f"{bad}: only {len(data)} bytes (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"{bad}: header length {n} does not fit the {len(data)}-byte file (truncated?)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{bad}: the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{bad}: the header is not a JSON object")
    return header, memoryview(data)[8 + n :]


def _verify_safetensors(path: Path, header: dict[str, Any], buf: memoryview) -> None:
    fix = "Export it again (a run's best epoch is also in best.pt) or copy the file again from a good source."
    if not integrity.verify_safetensors(path, header, buf, what="safetensors file", fix=fix):
        integrity.warn_unverified(path, "safetensors file")


def load_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a safetensors file into a dict of CPU tensors (validating offsets, dtypes and sizes)."""
    path = _require_file(path, "safetensors file")
    header, buf = _read_safetensors(path)
    out: dict[str, Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{str(path)!r}, tensor {name!r}"
        try:
            dtype = _ST_CODES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: malformed header entry {info!r}") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= len(buf) \
                or end - begin != math.prod(shape) * itemsize:
            raise ValueError(f"{where}: data_offsets {[begin, end]} do not match shape {shape} "
                             f"({info['dtype']}) within the {len(buf)}-byte buffer (truncated?)")
        if end == begin:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            raw = torch.frombuffer(bytearray(buf[begin:end]), dtype=torch.uint8)
            out[name] = raw.view(dtype).reshape(shape)
    _verify_safetensors(path, header, buf)  # after the structural checks, whose messages are more specific
    return out


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` dict of a safetensors file (empty when absent)."""
    path = _require_file(path, "safetensors file")
    header, buf = _read_safetensors(path)
    _verify_safetensors(path, header, buf)
    meta = dict(header.get("__metadata__") or {})
    meta.pop(integrity.SAFETENSORS_KEY, None)
    return meta


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def _strip_wrapper_prefixes(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    # State dicts saved from DDP or torch.compile wrappers carry these prefixes on every key.
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def load_state_dict_any(path: str | os.PathLike) -> dict[str, Tensor]:
    """Model weights from our checkpoint (key ``"model"``), a plain state_dict ``.pt`` or ``.safetensors``.

    ``"state_dict"`` (Lightning/mmcls style) is accepted as well; ``module.`` / ``_orig_mod.`` prefixes
    shared by every key are removed.
    """
    path = _require_file(path, "weights file")
    if path.suffix == ".safetensors":
        return _strip_wrapper_prefixes(load_safetensors(path))
    obj = load_checkpoint(path)
    if _is_state_dict(obj):
        return _strip_wrapper_prefixes(dict(obj))
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if _is_state_dict(obj.get(key)):
                return _strip_wrapper_prefixes(dict(obj[key]))
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise ValueError(
            f"{str(path)!r} is a dict without model weights (top-level keys: {keys}); expected a unikd "
            "checkpoint (key 'model'), a plain state_dict or a .safetensors file"
        )
    raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not model weights; expected a unikd "
                     "checkpoint, a plain state_dict or a .safetensors file")
