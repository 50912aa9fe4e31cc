"""``last.pt`` and the previous good one, ``last.prev.pt``: writing them, and choosing one to resume from.

Before ``last.pt`` is replaced, the current file -- once its checksum verifies -- becomes ``last.prev.pt``
(a hard link, so no copy; a copy where links are not supported). ``resume=auto`` loads ``last.pt`` and,
when it is missing or damaged, falls back to ``last.prev.pt`` with a warning: the steps in between are
trained again, and exact resume still holds from that earlier step.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from unikd import integrity
from unikd._atomic import temp_path
from unikd.engine.checkpoint import CHECKPOINT_FORMAT, atomic_save, load_checkpoint

log = logging.getLogger("unikd")

LAST = "last.pt"
PREVIOUS = "last.prev.pt"


def previous_path(last: Path) -> Path:
    return last.with_name(PREVIOUS)


def _keep_as_previous(last: Path) -> None:
    prev = previous_path(last)
    try:
        integrity.verify_zip(last)
    except integrity.IntegrityError as exc:
        log.warning("not keeping %s as %s: %s", last, prev.name, exc)
        return
    tmp = temp_path(prev)
    try:
        os.link(last, tmp)
    except OSError:  # no hard links on this filesystem
        shutil.copyfile(last, tmp)
    try:
        os.replace(tmp, prev)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_last(obj: Any, last: Path) -> Path:
    """Write ``obj`` to ``last`` atomically, keeping the file it replaces as ``last.prev.pt``."""
    last = Path(last)
    if last.is_file():
        _keep_as_previous(last)
    return atomic_save(obj, last)


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and "optimizer" in obj


def load_training_checkpoint(path: Path) -> Any:
    ckpt = load_checkpoint(path)
    if not is_training_checkpoint(ckpt):
        raise ValueError(f"resume: {str(path)!r} is not a unikd training checkpoint (last.pt / best.pt)")
    return ckpt


def load_latest(out_dir: str | os.PathLike[str]) -> tuple[Path, Any] | None:
    """The newest usable training checkpoint of a run folder: ``last.pt``, else ``last.prev.pt``.

    Returns None when neither exists. Raises ``ValueError`` naming both files when none is usable.
    """
    folder = Path(out_dir)
    errors: list[str] = []
    for name in (LAST, PREVIOUS):
        path = folder / name
        if not path.is_file():
            continue
        try:
            ckpt = load_training_checkpoint(path)
        except (ValueError, OSError) as exc:
            errors.append(f"{name}: {exc}")
            continue
        if name == PREVIOUS:
            why = "; ".join(errors) if errors else f"{LAST} is missing"
            log.warning(
                "resume=auto: %s -- resuming from %s (step %s) instead; the steps after it are trained again",
                why, path, ckpt.get("global_step"),
            )
        return path, ckpt
    if errors:
        raise ValueError(
            f"resume=auto: no usable checkpoint in {folder}: {' | '.join(errors)}. Resume from another "
            "checkpoint with resume=PATH, or start over with resume=no overwrite=true"
        )
    return None
