"""The damage kinds of ``benchmarks/reliability_damage.py``: each changes one file of a run folder or a
teacher cache in place, the way a disk, a copy, a user or an attacker could (see that script's docstring).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
from pathlib import Path

from unikd import integrity

KINDS = ["trunc0", "trunc50", "flip-mid", "flip-sum", "strip", "strip+flip", "other", "fifo", "dir", "pickle"]


class Payload:
    """Unpickling this runs ``touch MARKER`` (``os.system``): proof that a loader executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))


def _manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_manifest(path: Path, obj: dict, seal: bool = True) -> None:
    path.write_text(json.dumps(integrity.seal_json(obj) if seal else obj, indent=2, sort_keys=True) + "\n")


def _strip(path: Path) -> None:
    """Remove the checksum a file carries (shards: their entry in the manifest, then re-sealed)."""
    if path.suffix == ".pt":
        data = path.read_bytes()
        path.write_bytes(data[: -integrity._TRAILER - 2] + b"\0\0")
    elif path.suffix == ".safetensors":
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        header["__metadata__"].pop(integrity.SAFETENSORS_KEY)
        if not header["__metadata__"]:
            header.pop("__metadata__")
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        path.write_bytes(struct.pack("<Q", len(head)) + head + data[8 + n :])
    elif path.name == "manifest.json":
        m = _manifest(path)
        m.pop(integrity.JSON_KEY)
        _write_manifest(path, m, seal=False)
    else:  # a shard
        mpath = path.with_name("manifest.json")
        m = _manifest(mpath)
        for shard in m["shards"]:
            if shard["file"] == path.name:
                shard.pop("sha256")
        _write_manifest(mpath, m)


def _checksum_byte(path: Path) -> int:
    """Offset of a byte inside the checksum ``path`` carries (its last byte when it carries none)."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        (n,) = struct.unpack("<Q", data[:8])
        digest = json.loads(data[8 : 8 + n])["__metadata__"][integrity.SAFETENSORS_KEY]
        return data.index(digest.encode())
    if path.name == "manifest.json":
        return data.index(_manifest(path)[integrity.JSON_KEY].encode())
    return len(data) - 1  # .pt: the last hex digit of the zip comment; others: the last byte


def _middle(path: Path) -> int:
    """A byte the consumer reads, in the middle of the file: the high byte of the middle element of the
    largest tensor of the model (.pt: of its ``model`` state_dict; .safetensors), of the first row from the
    middle on that training reads (cache shards: rows it never visits, the ``drop_last`` tail, hold NaN),
    else the byte at size/2. XOR 0x01 there scales a float32 weight by 4 or 1/4, changes an fp16 logit by
    about a quarter: a one-bit error whose effect shows in the results."""
    if path.suffix == ".pt":
        import zipfile

        import torch

        tensor = max(torch.load(path, weights_only=True)["model"].values(), key=lambda t: t.numel())
        blob = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        with zipfile.ZipFile(path) as z, open(path, "rb") as fh:
            info = next(i for i in z.infolist() if i.file_size == len(blob) and z.read(i) == blob)
            fh.seek(info.header_offset)
            names = struct.unpack("<HH", fh.read(30)[26:30])  # local header: name and extra lengths
        start, size, item = info.header_offset + 30 + sum(names), len(blob), tensor.element_size()
    elif path.suffix == ".safetensors":
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = {k: v for k, v in json.loads(data[8 : 8 + n]).items() if k != "__metadata__"}
        begin, end = max((v["data_offsets"] for v in header.values()), key=lambda o: o[1] - o[0])
        start, size, item = 8 + n + begin, end - begin, 4  # the model is float32
    elif path.suffix == ".npy":
        import numpy as np

        rows = np.load(path, mmap_mode="r")
        row = next(i for i in range(len(rows) // 2, len(rows)) if np.isfinite(rows[i]).all())
        return int(rows.offset) + row * rows[0].nbytes + rows.itemsize - 1
    else:
        return path.stat().st_size // 2
    return start + (size // 2 // item) * item + item - 1


def damage(kind: str, path: Path, other: Path, marker: Path) -> bool:
    """Apply ``kind`` to ``path``; False when it does not apply to this file."""
    checksummed = path.suffix in (".pt", ".safetensors", ".npy") or path.name == "manifest.json"
    if kind in ("strip", "strip+flip") and not checksummed:
        return False
    if kind == "pickle" and path.suffix not in (".pt", ".npy"):
        return False
    if kind == "trunc0":
        path.write_bytes(b"")
    elif kind == "trunc50":
        os.truncate(path, path.stat().st_size // 2)
    elif kind == "flip-mid":
        _flip(path, _middle(path))
    elif kind == "flip-sum":
        _flip(path, _checksum_byte(path))
    elif kind == "strip":
        _strip(path)
    elif kind == "strip+flip":
        _strip(path)
        _flip(path, _middle(path))
    elif kind == "other":
        shutil.copyfile(other, path)
    elif kind in ("fifo", "dir"):
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
    elif kind == "pickle" and path.suffix == ".pt":
        from unikd.engine.run.checkpoint import atomic_save

        atomic_save({"format": "unikd-checkpoint", "model": Payload(marker), "optimizer": {}}, path)
    elif kind == "pickle":
        import numpy as np

        np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
        mpath = path.with_name("manifest.json")
        m = _manifest(mpath)
        for shard in m["shards"]:
            if shard["file"] == path.name:
                shard.update(sha256=integrity.sha256_file(path), bytes=path.stat().st_size)
        _write_manifest(mpath, m)
    return True
