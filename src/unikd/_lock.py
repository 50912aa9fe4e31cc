"""One writer per folder: an exclusive lock file that names its holder.

Used by ``unikd train`` (the run folder), ``unikd bench`` (the bench folder) and ``unikd cache-teacher``
(the cache folder). The lock file holds the holder's pid, host and start time as JSON, so a second process
fails at once with a message naming the pid; on Linux also who the holder is beyond its pid (the boot id
and the pid's start time, :mod:`unikd._process`), since pids are reused.

Where ``fcntl`` exists (Linux, macOS) the file is also ``flock``-ed, and the flock is the truth: the kernel
drops it when the holder dies, however it dies, so a crashed run never blocks the next one -- even when
its pid now belongs to another live process -- and two processes that find the same stale file cannot
both take it. Elsewhere (Windows, a filesystem without flock), and for lock files written by a process
that does not use ``flock``, the record decides: a file naming a live process on this host blocks, unless
its boot id or start time shows the pid was reused; one naming a dead process is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from unikd import _process
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


def _valid_pid(holder: dict[str, Any]) -> int | None:
    pid = holder.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def _same_process(holder: dict[str, Any], pid: int) -> bool | None:
    """Whether the live ``pid`` is the process that wrote ``holder``: False when the recorded boot id or
    start time differ from its own (the pid was reused); None when nothing recorded can be checked."""
    boot, mine = holder.get("boot_id"), _process.boot_id()
    if isinstance(boot, str) and mine is not None and boot != mine:
        return False  # written before a reboot: no process outlives one
    start = holder.get("pid_start")
    if isinstance(start, int) and not isinstance(start, bool):
        now = _process.start_ticks(pid)
        if now is not None:
            return now == start
    return None


def _holder_alive(holder: dict[str, Any], *, flocked: bool = False) -> bool:
    """Whether the holder the record names may still hold the lock (True: respect it).

    ``flocked``: this process holds the file's flock, so a holder that flocked it too has ended.
    """
    pid = _valid_pid(holder)
    if pid is None:
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process (shared filesystem): cannot check it, so respect it
    if flocked and (pid == os.getpid() or holder.get("flock", "what" in holder)):
        # Its writer flocked the file (records from before the "flock" field: every one with "what" did),
        # and a flock of this process would have blocked ours: the writer has ended, whatever its pid is now.
        return False
    if not (pid == os.getpid() or pid_alive(pid)):
        return False
    return _same_process(holder, pid) is not False


def _note_takeover(path: Path, holder: dict[str, Any]) -> None:
    """One line on stderr when a record naming a live pid is taken over: that pid was reused."""
    pid = _valid_pid(holder)
    if pid is not None and holder.get("host") in (None, socket.gethostname()) and (
        pid == os.getpid() or pid_alive(pid)
    ):
        now = "this process" if pid == os.getpid() else "another process"
        print(f"unikd: taking over the stale lock {path}: its holder (pid {pid}) has ended; that pid now "
              f"belongs to {now}", file=sys.stderr)


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
            flocked = False
            if fcntl is not None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    flocked = True
                except BlockingIOError:  # a live process holds it
                    os.close(fd)
                    raise self._refuse(read_holder(self.path)) from None
                except OSError:  # this filesystem has no flock (ENOLCK, EOPNOTSUPP): the record decides
                    pass
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the previous holder removed the file between our open and our flock
                    os.close(fd)
                    continue
                holder = read_holder(self.path)
                if holder and _holder_alive(holder, flocked=flocked):
                    os.close(fd)  # a holder that does not flock (another tool, a filesystem without flock)
                    raise self._refuse(holder)
                if holder:
                    _note_takeover(self.path, holder)
            else:  # pragma: no cover - Windows
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    holder = read_holder(self.path)
                    if _holder_alive(holder):
                        raise self._refuse(holder) from None
                    _note_takeover(self.path, holder)
                    Path(self.path).unlink(missing_ok=True)  # its writer died
                    continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "what": self.what, "flock": flocked, **_process.identity(os.getpid())}
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
