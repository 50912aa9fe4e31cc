"""Atomic file writes shared by checkpoints, configs, run logs and data caches.

Every file unikd writes goes to a temporary file in the destination folder, is flushed and fsynced, then
moved over the destination with ``os.replace`` (atomic on POSIX and Windows), so a process killed at any
moment leaves either the old file or the new one, never a truncated file that a later run would trust.

Temporary files are named ``.<name>.<pid>.<random>.tmp``: the writer's pid lets a later process sweep the
leftovers of a killed writer without touching the temporary file of one that is still writing
(:func:`stale_temp_files`). They are created with mode ``0o666`` filtered by the process umask, like any
file ``open()`` creates (``tempfile.mkstemp`` would make them ``0o600``).

An ``OSError`` raised while writing (disk full, permission denied, read-only folder) is re-raised with
the destination path as its ``filename``, so error messages name the file the user knows about rather
than its temporary name.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable; best effort (not possible on every platform/filesystem)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary name next to ``path`` that records this process's pid (see the module doc)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _open_temp(path: Path) -> tuple[int, Path]:
    for _ in range(100):
        tmp = temp_path(path)
        try:
            # 0o666 & ~umask, as open() would do: run files get the user's usual permissions.
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


def with_path(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """The same error (same errno, hence the same subclass) naming ``path`` instead of a temporary name."""
    if exc.errno is None:
        return exc
    new = OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    new.__cause__ = exc
    return new


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fileobj)`` on a binary temp file next to ``path``, fsync, then rename it into place.

    ``fileobj`` is opened read-write (``w+b``), so ``write`` may read back what it wrote (checksums).
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_temp(path)
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            _unlink_quietly(tmp)
        if exc.filename is None or (tmp is not None and str(exc.filename) == str(tmp)):
            raise with_path(exc, path) from exc
        raise
    except BaseException:
        # Includes KeyboardInterrupt: never leave temp files behind.
        if tmp is not None:
            _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)
    return path


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # e.g. the folder turned read-only: the original error matters more
        pass


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (one owned by another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # e.g. Windows: no signal 0; assume alive rather than delete a live writer's file
        return True
    return True


def stale_temp_files(folder: str | os.PathLike[str], *, own: bool = False) -> Iterator[Path]:
    """Temporary files of :func:`atomic_write` in ``folder`` whose writer process is no longer alive.

    ``own=True`` counts this process's pid as dead too: right after taking a folder's lock, before this
    process wrote anything there, a file with its pid was left by an earlier process that had the same
    pid (containers often start every run as pid 1).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        m = _TEMP_RE.match(entry.name)
        if not m or not entry.is_file():
            continue
        pid = int(m["pid"])
        if (own if pid == os.getpid() else not pid_alive(pid)):
            yield entry
