"""One check before unikd opens a file it reads (checkpoint, cache manifest or shard, config, run log).

``open()`` on a FIFO blocks until a writer appears -- forever, when there is none -- and a socket or a
device is never the file the user meant. ``os.stat`` does not block, so the kind of file is checked
first and anything but a regular file is refused with a message naming it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def require_regular_file(path: str | os.PathLike[str], what: str, *, missing: str = "check the path") -> Path:
    """``path`` as a ``Path`` when it is a regular file (a symlink to one counts).

    Raises ``FileNotFoundError`` (with the advice ``missing``) when it does not exist and ``ValueError``
    when it is a folder or not a regular file.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; {missing}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{what} {str(path)!r} is a folder, expected a file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise ValueError(
            f"{what} {str(path)!r} is {kind}, not a regular file; unikd reads only regular files (reading "
            "a pipe or device could block forever). Point it at the file itself, e.g. a copy on disk"
        )
    return path


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists and is a regular file (never opens it)."""
    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except OSError:
        return False
