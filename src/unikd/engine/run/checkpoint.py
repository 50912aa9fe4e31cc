"""Checkpoint I/O: atomic writes, safe loads (``weights_only=True``); the safetensors codec is re-exported
from :mod:`unikd.engine.run.safetensors_io`.

Atomicity: every file is written to a temporary file in the destination folder, flushed and fsynced, then
moved over the destination with ``os.replace`` (atomic on POSIX and Windows). A run killed at any moment
therefore leaves either the previous file or the new one, never a truncated one.

Integrity: every file written here carries a sha256 checksum that the loaders verify (see
:mod:`unikd.integrity`): a damaged file raises :class:`~unikd.integrity.IntegrityError` naming it, instead
of loading wrong weights. Training checkpoints say in their payload that they were sealed
(``version >= SEALED_VERSION``), so one whose checksum was stripped (truncated, re-saved, edited) is
refused too. Files without a checksum and without that mark (other tools, unikd 0.1.0) load with a
warning, or are refused under ``integrity=strict``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unikd import integrity
from unikd._atomic import atomic_write
from unikd._files import require_regular_file
from unikd.engine.run.safetensors_io import (  # noqa: F401  (re-exported: the public checkpoint API)
    load_safetensors,
    safetensors_metadata,
    save_safetensors,
)

CHECKPOINT_FORMAT = "unikd-checkpoint"
# Payload version from which every training checkpoint is written with its checksum (version 1: 0.1.0).
SEALED_VERSION = 2

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
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder, expected a file (e.g. {path / 'best.pt'})")
    return require_regular_file(path, what, missing="check the path (and the run's out_dir)")


DAMAGED_CHECKPOINT_FIX = (
    "Use another checkpoint of the run (resume=auto falls back from last.pt to last.prev.pt; best.pt holds "
    "the best epoch) or copy the file again from a good source."
)
_RESAVED_FIX = (
    " If you re-saved it yourself with torch.save, save it with unikd.engine.run.checkpoint.atomic_save "
    "instead (it writes the checksum), or save only its weights (torch.save(ckpt['model'], PATH))."
)
_RESAVE = "re-save it with unikd.engine.run.checkpoint.atomic_save to give it a checksum"


def is_sealed(obj: Any) -> bool:
    """Whether a loaded payload is a training checkpoint that unikd always writes with its checksum."""
    if not (isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT):
        return False
    version = obj.get("version")
    return isinstance(version, int) and version >= SEALED_VERSION


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a ``torch.save`` file with ``weights_only=True`` (no arbitrary code runs on load).

    The checksum written by :func:`atomic_save` is verified first. A file without one is refused when its
    payload says unikd sealed it (:func:`is_sealed`: the checksum was stripped), else it loads with a
    warning, or is refused under ``integrity=strict`` (:func:`unikd.integrity.unverified`).

    Raises:
        FileNotFoundError: the file does not exist.
        unikd.integrity.IntegrityError: (a ``ValueError``) the file does not match its checksum, or lacks it.
        ValueError: the file is truncated/corrupt, not a PyTorch file, not a regular file, or holds objects
            other than tensors and plain containers.
    """
    path = _require_file(path, "checkpoint")
    verified = integrity.verify_zip(path, what="checkpoint", fix=DAMAGED_CHECKPOINT_FIX)
    obj = _torch_load(path, map_location)
    if not verified:
        if is_sealed(obj):
            raise integrity.absent(path, "checkpoint", DAMAGED_CHECKPOINT_FIX + _RESAVED_FIX)
        integrity.unverified(path, "checkpoint", resave=_RESAVE)
    return obj


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
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
            "If a run was killed or its disk filled while writing, use another checkpoint of the run "
            "(resume=auto falls back from last.pt to last.prev.pt)."
        ) from None


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
