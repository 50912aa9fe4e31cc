"""One writer per folder: an exclusive lock file that names its holder.

Used by ``unikd train`` (the run folder), ``unikd bench`` (the bench folder) and ``unikd cache-teacher``
(the cache folder). The lock file holds the holder's pid, host and start time as JSON, so a second process
fails at once with a message naming the pid.

Where ``fcntl`` exists (Linux, macOS) the file is also ``flock``-ed: the kernel drops that lock when the
holder dies, however it dies, so a crashed run never blocks the next one, and two processes that find the
same stale file cannot both take it. Elsewhere, and for lock files written by a process that does not use
``flock``, the pid decides: a file naming a live process on this host blocks, one naming a dead process is
taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from unikd._atomic import pid_alive

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FolderLockedError(RuntimeError, ValueError):
    """Another process holds the folder's lock; ``holder`` is what its lock file says (pid, host, ...)."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def read_holder(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The lock file's content (``{}`` when absent or unreadable). Plain-pid files are accepted too."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    if isinstance(data, int):
        return {"pid": data}
    return data if isinstance(data, dict) else {}


def _holder_alive(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process (shared filesystem): cannot check it, so respect it
    return pid == os.getpid() or pid_alive(pid)


class FolderLock:
    """``with FolderLock(folder, ".train.lock", "unikd train"):`` -- exclusive use of ``folder``.

    Args:
        folder: the folder to protect (created if needed).
        name: the lock file's name inside it.
        what: who takes it, for the error message of the process that is turned away.
        fix: what that process should do instead (appended to the message).
    """

    def __init__(self, folder: str | os.PathLike[str], name: str, what: str, fix: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self.fix = fix
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _refuse(self, holder: dict[str, Any]) -> FolderLockedError:
        pid = holder.get("pid", "?")
        since = holder.get("started")
        when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
        host = holder.get("host")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        who = "this process" if pid == os.getpid() else f"another process (pid {pid}{where}{when})"
        return FolderLockedError(
            f"{who} is already writing into {self.folder} ({holder.get('what', self.what)}); only one "
            f"process may write into a folder at a time. {self.fix}".rstrip()
            + f" If no such process is running, delete {self.path}.",
            holder,
        )

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            if fcntl is not None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._refuse(read_holder(self.path)) from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the previous holder removed the file between our open and our flock
                    os.close(fd)
                    continue
                holder = read_holder(self.path)
                if holder and holder.get("pid") != os.getpid() and _holder_alive(holder):
                    os.close(fd)  # a holder that does not flock (another tool or an older unikd)
                    raise self._refuse(holder)
            else:  # pragma: no cover - Windows
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    holder = read_holder(self.path)
                    if _holder_alive(holder):
                        raise self._refuse(holder) from None
                    Path(self.path).unlink(missing_ok=True)  # its writer died
                    continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "what": self.what}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode("utf-8"))
            os.fsync(fd)
            self._fd = fd
            return self
        raise FolderLockedError(f"could not take the lock {self.path}; delete it if no process uses "
                                f"{self.folder}", {})

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one takes the file being deleted)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release (e.g. an exception in setup)
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
