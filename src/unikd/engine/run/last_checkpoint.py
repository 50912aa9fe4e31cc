"""``last.pt`` and the previous good one, ``last.prev.pt``: writing them, and choosing one to resume from.

Before ``last.pt`` is replaced, the current file -- only when its checksum verifies -- becomes
``last.prev.pt`` (a hard link, so no copy; a copy where links are not supported). A ``last.pt`` that does
not verify (damaged, truncated or empty: no checksum trailer; or a 0.1.0 file, which cannot be checked)
never replaces the good ``last.prev.pt`` it may have fallen back to. ``resume=auto`` loads ``last.pt`` and,
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
from unikd.engine.run.checkpoint import CHECKPOINT_FORMAT, atomic_save, load_checkpoint

log = logging.getLogger("unikd")

LAST = "last.pt"
PREVIOUS = "last.prev.pt"


def previous_path(last: Path) -> Path:
    return last.with_name(PREVIOUS)


def _verifies(last: Path, prev: Path) -> bool:
    try:
        if integrity.verify_zip(last):
            return True
        why = "it carries no checksum (truncated or empty, or written by unikd 0.1.0): it cannot be verified"
    except (integrity.IntegrityError, OSError) as exc:
        why = str(exc)
    kept = f"{prev} stays the fallback" if prev.is_file() else f"there is no {prev.name} yet"
    log.warning("not keeping %s as %s: %s; %s", last, prev.name, why, kept)
    return False


def _keep_as_previous(last: Path) -> None:
    prev = previous_path(last)
    if not _verifies(last, prev):
        return
    tmp = temp_path(prev)
    try:
        try:
            os.link(last, tmp)
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(last, tmp)
        os.replace(tmp, prev)
    except BaseException:  # a failed copy (disk full) must not leave a partial temp file behind
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
