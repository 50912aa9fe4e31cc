"""The loss's own state (TAID's schedule) in each Hugging Face ``Trainer`` checkpoint, with its checksum.

``unikd_loss_state.pt`` sits beside ``optimizer.pt``; only unikd writes it, so it is sealed like a unikd
checkpoint (sha256 in the zip comment, :mod:`unikd.integrity`) and refused on resume when its checksum is
missing or does not match, rather than restoring a damaged schedule. Loaded with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import torch

from unikd import integrity
from unikd._atomic import atomic_write
from unikd._files import require_regular_file

LOSS_STATE = "unikd_loss_state.pt"
_WHAT = "loss state"
_FIX = ("Resume from another checkpoint folder, or delete this file to restart the loss's schedule from "
        "its beginning.")


def save_loss_state(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state)`` to ``path`` atomically, with its checksum."""

    def write(f: IO[bytes]) -> None:
        writer = integrity.HashingWriter(f)
        torch.save(state, writer)
        integrity.seal_zip(f, writer)

    atomic_write(path, write)


def load_loss_state(path: str | Path) -> Any:
    """The state :func:`save_loss_state` wrote; ``IntegrityError`` naming the file when it is damaged."""
    path = require_regular_file(path, _WHAT)
    if not integrity.verify_zip(path, what=_WHAT, fix=_FIX):
        raise integrity.absent(path, _WHAT, _FIX)
    return torch.load(path, map_location="cpu", weights_only=True)
