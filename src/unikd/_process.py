"""Who a process is beyond its pid, from ``/proc`` (Linux): the boot id and the process's start time.

Pids are reused -- after a container restart the new run often gets the very pid the crashed one had -- so
a pid alone cannot say whether the process that wrote a lock file still lives. The pair (boot id, start
time of the pid in clock ticks since boot) names one process for the machine's whole uptime. Every
function returns None where ``/proc`` (or the field) is absent, and callers then fall back to the pid.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def boot_id() -> str | None:
    """The kernel's random id of this boot (``/proc/sys/kernel/random/boot_id``)."""
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``: when the process started, in clock ticks since boot."""
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # Field 2 (the command name, in parentheses) may itself hold spaces and ')': split after the last ')'.
    rest = text[text.rfind(")") + 1:].split()
    try:
        return int(rest[22 - 3])  # rest starts at field 3
    except (IndexError, ValueError):
        return None


def identity(pid: int) -> dict[str, object]:
    """``{"boot_id": ..., "pid_start": ...}`` for ``pid``, leaving out what this system cannot tell."""
    out: dict[str, object] = {}
    boot, ticks = boot_id(), start_ticks(pid)
    if boot is not None:
        out["boot_id"] = boot
    if ticks is not None:
        out["pid_start"] = ticks
    return out
