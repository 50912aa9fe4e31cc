"""Reads the records of an offline wandb run file (``run-<id>.wandb``), so tests can check what was logged
without a server.

The file is a sequence of 32 KiB blocks holding length-prefixed records (LevelDB's log layout): a 7-byte
file header (ident ``:W&B``, magic 0xBEE1, version), then per record a 7-byte header (crc32, length, type
1=full, 2=first, 3=middle, 4=last) and its bytes; a block tail shorter than a header is zero padding. Each
record is a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a wandb run file"
    pos, chunk = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def logged(path: Path) -> dict[str, Any]:
    """``{"config": {...}, "history": [{key: value}, ...], "summary": {...}}`` of one run file."""
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["config"].update({_key(u): json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({_key(u): json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({_key(u): json.loads(u.value_json) for u in r.summary.update})
    return out
