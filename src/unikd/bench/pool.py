"""A small pool of concurrent subprocesses for the bench: start a job when a slot is free, wait for any
job to end, stop them all on an interrupt.

Each job's output is appended to its own log file. On Linux a child also dies when the bench process is
killed outright (``PR_SET_PDEATHSIG``), so no orphaned training keeps a core busy.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Job:
    """One subprocess: ``cmd`` with its output appended to ``log``; ``on_end(returncode)`` runs when it
    ends (in the bench process, never concurrently with another callback)."""

    key: str
    cmd: list[str]
    log: Path
    on_end: Callable[[int], None]
    proc: subprocess.Popen[Any] | None = None
    started: float = 0.0
    _log_handle: Any = field(default=None, repr=False)


class JobPool:
    """Run up to ``slots`` jobs at once; ``threads`` (when set) is each job's OMP_NUM_THREADS."""

    def __init__(self, slots: int, *, threads: int | None = None) -> None:
        if slots < 1:
            raise ValueError(f"jobs must be >= 1, got {slots}")
        self.slots = slots
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # logs show progress as it happens
        if threads is not None:
            # Each job a fixed, small thread count: several single-threaded jobs on a busy machine degrade
            # gracefully, whereas OpenMP threads of one job spin-wait for each other under contention.
            self.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.running: list[Job] = []

    def free(self) -> int:
        return self.slots - len(self.running)

    def start(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(job.log, "a", encoding="utf-8")  # noqa: SIM115 - closed when the job ends
        fh.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} unikd bench: {' '.join(job.cmd)}\n")
        fh.flush()
        job._log_handle = fh
        job.started = time.monotonic()
        job.proc = subprocess.Popen(
            job.cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.running.append(job)

    def wait_any(self, poll: float = 0.5, stop: Callable[[], bool] | None = None) -> list[tuple[Job, int]]:
        """Block until at least one running job has ended (or ``stop()`` turns true); return the ended jobs
        with their exit codes (their ``on_end`` callbacks have run)."""
        while True:
            ended = [(j, j.proc.poll()) for j in self.running if j.proc is not None]
            ended = [(j, rc) for j, rc in ended if rc is not None]
            if ended or not self.running or (stop is not None and stop()):
                break
            time.sleep(poll)
        for job, rc in ended:
            self.running.remove(job)
            job._log_handle.close()
            job.on_end(rc)
        return ended

    def stop_all(self, timeout: float = 60.0) -> None:
        """SIGTERM every running job (a training run saves ``last.pt`` and exits), then kill stragglers."""
        for job in self.running:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.terminate()
        deadline = time.monotonic() + timeout
        for job in self.running:
            if job.proc is None:
                continue
            try:
                job.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
            job._log_handle.close()
        self.running = []
