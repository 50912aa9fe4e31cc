"""Shared helpers of the ``benchmarks/reliability_*.py`` scripts: run unikd commands, compare run results.

:class:`Runner` runs one ``unikd`` command line (the arguments after ``unikd``) and returns its exit code,
stdout, stderr and whether it timed out. Two modes:

- ``fork`` (default): torch and unikd are imported once in this process; every command runs in a forked
  child that calls ``unikd.cli.main(argv)`` with stdout/stderr redirected to files, an uncaught exception
  printed as a traceback the way the interpreter prints one. Importing torch costs seconds on a loaded
  machine; a fork costs milliseconds, which is what makes a matrix of ~100 consumer runs take minutes.
- ``fresh`` (``--fresh`` in the scripts): ``python -m unikd ...`` in a new interpreter, exactly what a user
  runs (slower; use it to confirm a surprising outcome).

A child gets SIGKILL when it outlives ``timeout`` (reported as ``timed_out``) or ``kill_after`` seconds.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"
TIMING_KEYS = ("wall_seconds", "seconds_per_epoch", "images_per_s", "epoch_seconds")


@dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float
    timed_out: bool = False
    killed: bool = False  # killed on purpose (kill_after)

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.err


def env() -> dict[str, str]:
    """One thread per process, this checkout's ``src`` first on the path."""
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


class Proc:
    """A started command: ``poll()`` (None while it runs), ``kill(sig)``, ``wait(timeout)`` -> Result."""

    def __init__(self, pid: int, popen: subprocess.Popen | None, io: Path | None) -> None:
        self.pid, self._popen, self._io = pid, popen, io
        self.t0 = time.monotonic()
        self._status: int | None = None

    def poll(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        if self._status is None:
            wpid, status = os.waitpid(self.pid, os.WNOHANG)
            if wpid != 0:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 600.0, kill_after: float | None = None) -> Result:
        limit = min(timeout, kill_after) if kill_after is not None else timeout
        killed = timed_out = False
        if self._popen is not None:  # communicate() drains the pipes while it waits
            try:
                out, err = self._popen.communicate(timeout=max(0.0, limit - (time.monotonic() - self.t0)))
            except subprocess.TimeoutExpired:
                killed, timed_out = kill_after is not None and kill_after <= timeout, True
                self._popen.kill()
                out, err = self._popen.communicate()
        else:
            while self.poll() is None and time.monotonic() - self.t0 < limit:
                time.sleep(0.005)
            if self.poll() is None:
                killed, timed_out = kill_after is not None and kill_after <= timeout, True
                self.kill()
                while self.poll() is None:
                    time.sleep(0.005)
            assert self._io is not None
            out = (self._io / "out").read_text(errors="replace")
            err = (self._io / "err").read_text(errors="replace")
            shutil.rmtree(self._io, ignore_errors=True)
        rc = self.poll()
        assert rc is not None
        return Result(rc, out, err, time.monotonic() - self.t0, timed_out and not killed, killed)


class Runner:
    def __init__(self, mode: str = "fork", timeout: float = 60.0) -> None:
        self.mode, self.timeout = mode, timeout
        self._tmp = Path(tempfile.mkdtemp(prefix="unikd-rel-io-"))
        atexit.register(shutil.rmtree, self._tmp, True)  # forked children leave with os._exit: no atexit
        if mode == "fork":
            os.environ.update(env())  # also for the subprocesses the commands start (unikd bench)
            import torch

            import unikd.cache.build  # noqa: F401  (everything the commands import, once)
            import unikd.cli
            import unikd.engine.loop.trainer  # noqa: F401

            torch.set_num_threads(1)
            for name in unikd.cli.COMMANDS:
                __import__(f"unikd.cli.{name}")

    def run(self, argv: list[str], *, cwd: str | Path | None = None, timeout: float | None = None,
            kill_after: float | None = None, preexec: Callable[[], None] | None = None) -> Result:
        """Run ``unikd ARGV`` to its end (SIGKILL after ``timeout`` s, or on purpose after ``kill_after``)."""
        return self.start(argv, cwd=cwd, preexec=preexec).wait(
            self.timeout if timeout is None else timeout, kill_after)

    def start(self, argv: list[str], *, cwd: str | Path | None = None,
              preexec: Callable[[], None] | None = None) -> Proc:
        """Start ``unikd ARGV`` and return at once; ``preexec`` runs in the child first (e.g. setrlimit)."""
        if self.mode == "fresh":
            popen = subprocess.Popen([sys.executable, "-m", "unikd", *argv], cwd=cwd, env=env(), text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec)
            return Proc(popen.pid, popen, None)
        io = Path(tempfile.mkdtemp(dir=self._tmp))
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            self._child(argv, cwd, io / "out", io / "err", preexec)
        return Proc(pid, None, io)

    @staticmethod
    def _child(argv: list[str], cwd: str | Path | None, out_f: Path, err_f: Path,
               preexec: Callable[[], None] | None) -> None:  # pragma: no cover
        rc = 1
        try:
            os.setsid()
            for fd, path in ((1, out_f), (2, err_f)):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            # Rebind the streams to fds 1 and 2: the parent's may be other objects (pytest's capture).
            sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
            sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            if cwd is not None:
                os.chdir(cwd)
            if preexec is not None:
                preexec()
            sys.argv = ["unikd", *argv]
            from unikd.cli import main

            rc = int(main(argv) or 0)
        except SystemExit as exc:
            code = exc.code
            if isinstance(code, int):
                rc = code
            elif code is None:
                rc = 0
            else:
                print(code, file=sys.stderr)
                rc = 1
        except BaseException:
            traceback.print_exc()
            rc = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(rc)


def run_weights(folder: str | Path) -> dict[str, Any]:
    """The tensors that decide a run's future: last.pt's model, train_model, objective, optimizer state."""
    import torch

    from unikd.engine.run.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(folder) / "last.pt")
    out: dict[str, Any] = {"global_step": ckpt.get("global_step")}
    for key in ("model", "train_model", "objective"):
        for name, value in (ckpt.get(key) or {}).items():
            out[f"{key}.{name}"] = value
    for pid, state in (ckpt.get("optimizer") or {}).get("state", {}).items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"optimizer.{pid}.{name}"] = value
    return out


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when ``a`` and ``b`` hold the same keys and bit-identical values, else the first differing key."""
    import torch

    if a.keys() != b.keys():
        return f"keys {sorted(set(a) ^ set(b))[:3]}"
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                return key
        elif x != y:
            return key
    return None


def metrics_rows(folder: str | Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` without the timing columns (which differ between identical runs)."""
    path = Path(folder) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def machine() -> dict[str, str]:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = "?"
    return {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
            "python": platform.python_version(), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "commit": commit or "?"}


def tally(outcomes: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def report(title: str, counts: dict[str, int], extra: dict[str, Any], json_path: str | None) -> None:
    """Print the totals and the machine line; write everything to ``json_path`` when given."""
    info = machine()
    print(f"\n{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print("  " + "  ".join(f"{k}={v}" for k, v in info.items()))
    if json_path:
        Path(json_path).write_text(json.dumps({"counts": counts, **info, **extra}, indent=1) + "\n")
        print(f"  wrote {json_path}")


def last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def script_parser(doc: str) -> argparse.ArgumentParser:
    """The command line every reliability script shares: its docstring as help, ``--fresh`` and ``--work``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    ap.add_argument("--fresh", action="store_true", help="a new interpreter per command (slow, exact)")
    ap.add_argument("--work", help="work folder (default: a new temp folder)")
    return ap


def work_folder(path: str | None, name: str) -> Path:
    """``path``, or a new temp folder ``unikd-<name>-*``; created."""
    work = Path(path or tempfile.mkdtemp(prefix=f"unikd-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    return work
