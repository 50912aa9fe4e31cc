"""Peak resident memory of a block of code in this process (Linux ``/proc``), for the memory benchmarks.

``with PeakMemory() as m: ...`` resets the process's ``VmHWM`` to its current resident set (writing 5 to
``/proc/self/clear_refs``) and, on exit, sets ``m.peak_bytes`` to the highest resident set reached inside
the block above the resident set at its start.
"""

from __future__ import annotations


def proc_status(key: str) -> int:
    """A ``/proc/self/status`` entry (``VmRSS``, ``VmHWM``, ...) in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


class PeakMemory:
    def __enter__(self) -> PeakMemory:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        self.base = proc_status("VmRSS")
        self.peak_bytes = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_bytes = proc_status("VmHWM") - self.base
