"""I/O errors of the run folder as one clear line: the file, the reason, the checkpoints still intact.

Every checkpoint is written atomically, so when a write fails (disk full, permission denied, read-only
folder) the files already in place are whole; the message says which ones, and how to continue from them
once the cause is fixed: ``resume=auto`` when ``last.pt`` or ``last.prev.pt`` is there; else, when only
``best.pt`` is (a failure between the first ``best.pt`` and the first ``last.pt``), ``resume=<best.pt>``,
since ``resume=auto`` looks only at the ``last`` files; else running the command again.
"""

from __future__ import annotations

import errno
from pathlib import Path

_HINTS = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some space within your disk quota",
    errno.EACCES: "make the folder writable",
    errno.EPERM: "make the folder writable",
    errno.EROFS: "the filesystem is read-only: choose a writable out_dir",
}


class RunWriteError(RuntimeError):
    """A file of the run folder could not be written; the message names it and the intact checkpoints."""


def intact_checkpoints(folder: str | Path, *, saved_step: int | None = None) -> str:
    """``"intact: <out>/last.pt (step 120), <out>/best.pt"`` -- what a resume can start from."""
    folder = Path(folder)
    parts = []
    last = folder / "last.pt"
    if last.is_file():
        parts.append(f"{last}" + (f" (step {saved_step})" if saved_step is not None else ""))
    for name in ("last.prev.pt", "best.pt"):
        if (folder / name).is_file():
            parts.append(str(folder / name))
    return "intact: " + ", ".join(parts) if parts else "no checkpoint had been written yet"


def _then(folder: Path) -> str:
    if any((folder / name).is_file() for name in ("last.pt", "last.prev.pt")):
        return "continue with resume=auto"
    if (folder / "best.pt").is_file():  # a full training checkpoint of the epoch it was written at
        return f"continue from it with resume={folder / 'best.pt'} (resume=auto needs a last.pt)"
    return "run the command again"


def inside(path: object, folder: str | Path) -> bool:
    if path is None:
        return False
    try:
        Path(str(path)).resolve().relative_to(Path(folder).resolve())
    except (ValueError, OSError):
        return False
    return True


def run_write_error(exc: OSError, folder: str | Path, *, saved_step: int | None = None) -> RunWriteError:
    """The one-line error for an ``OSError`` raised while writing into the run folder ``folder``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or -1)
    hint = _HINTS.get(exc.errno or -1, "fix the cause")
    intact = intact_checkpoints(folder, saved_step=saved_step)
    then = _then(Path(folder))
    return RunWriteError(
        f"cannot write {exc.filename or folder}: {reason}{f' ({code})' if code else ''}; {intact}. "
        f"{hint[0].upper()}{hint[1:]}, then {then}"
    )
