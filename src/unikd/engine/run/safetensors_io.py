"""A dependency-free safetensors codec (https://huggingface.co/docs/safetensors), with unikd's checksum.

The format: an 8-byte little-endian unsigned header length ``N``, ``N`` bytes of JSON mapping each tensor
name to ``{"dtype", "shape", "data_offsets"}`` (offsets relative to the byte buffer that follows the
header) plus an optional ``"__metadata__"`` dict of strings, then the raw little-endian tensor bytes. We
write it ourselves so that the package stays optional.

Integrity: every file written here holds ``unikd.sha256`` (the checksum, :mod:`unikd.integrity`) and
``unikd.integrity`` (the mark saying it was written with one) in ``__metadata__``. A file with the mark
but no checksum was edited: it is refused like a mismatch. Files without the mark (other tools, older
unikd) load with a warning, or are refused under ``integrity=strict``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unikd import integrity
from unikd._atomic import atomic_write
from unikd._files import require_regular_file

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


_FIX = "Export it again (a run's best epoch is also in best.pt) or copy the file again from a good source."
_RESAVE = "re-save it with unikd.engine.run.checkpoint.save_safetensors to give it a checksum"


def _require(path: str | os.PathLike) -> Path:
    return require_regular_file(path, "safetensors file")


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
    # The mark is covered by the checksum; the checksum covers the header without itself plus the tensor
    # bytes (unikd.integrity).
    header["__metadata__"] = {**header.get("__metadata__", {}), integrity.SAFETENSORS_MARK: "sha256"}
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
    if integrity.verify_safetensors(path, header, buf, what="safetensors file", fix=_FIX):
        return
    if integrity.SAFETENSORS_MARK in (header.get("__metadata__") or {}):  # unikd wrote it: damaged
        raise integrity.absent(path, "safetensors file", _FIX, where="in its __metadata__")
    integrity.unverified(path, "safetensors file", resave=_RESAVE)


def load_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a safetensors file into a dict of CPU tensors (validating offsets, dtypes and sizes)."""
    path = _require(path)
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
    """The ``__metadata__`` dict of a safetensors file (empty when absent), without unikd's own entries."""
    path = _require(path)
    header, buf = _read_safetensors(path)
    _verify_safetensors(path, header, buf)
    meta = dict(header.get("__metadata__") or {})
    meta.pop(integrity.SAFETENSORS_KEY, None)
    meta.pop(integrity.SAFETENSORS_MARK, None)
    return meta
