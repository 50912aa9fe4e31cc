"""One writer per run folder, and no run silently replaced by another.

- ``out_dir: null`` (the default) gives every run its own folder, ``runs/<method>-<model>-<timestamp>``.
- Rank 0 holds the folder's lock (``.train.lock``) for the whole run; a second ``unikd train`` into the
  same folder fails at once, naming the first one's pid.
- A folder that already holds a run is only reused when asked: ``resume=auto`` / ``resume=PATH`` continue
  it, ``overwrite=true`` deletes its files first (so a new run killed early never leaves the new config
  next to the old run's summary); otherwise the run stops before writing anything.
- Temporary files of atomic writes are swept only when their writer process is dead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch.distributed as dist

from unikd._atomic import stale_temp_files, with_path
from unikd._lock import FolderLock
from unikd.engine.config import Config
from unikd.engine.run.distributed import DistInfo
from unikd.engine.run.environment import ENVIRONMENT_FILE
from unikd.engine.run.identity import RUN_FILE
from unikd.engine.run.write_errors import inside, run_write_error

log = logging.getLogger("unikd")

LOCK_NAME = ".train.lock"
CHECKPOINTS = ("last.pt", "last.prev.pt", "best.pt", "student.safetensors")
RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", RUN_FILE, ENVIRONMENT_FILE, *CHECKPOINTS)
# What a run stopped before its first epoch leaves: no run to continue or to protect.
_SETUP_FILES = frozenset({"config.yaml", RUN_FILE, ENVIRONMENT_FILE})
RUN_FOLDERS = ("tb",)


def default_out_dir(cfg: Config, *, root: str | Path = "runs", now: float | None = None) -> Path:
    """``runs/<method>-<model>-<YYYYmmdd-HHMMSS>`` (the model name made filesystem-safe)."""
    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.model)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return Path(root) / f"{cfg.method}-{model}-{stamp}"


def _claim_new_folder(base: Path) -> Path:
    """Create ``base`` (or ``base-2``, ``base-3``, ... when taken); mkdir is the atomic claim."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a fresh run folder next to {base}; set out_dir explicitly")


def resolve_out_dir(cfg: Config, info: DistInfo) -> Config:
    """``cfg`` with ``out_dir`` set: unchanged when given, else a fresh default folder (rank 0 picks it)."""
    if cfg.out_dir is not None:
        return cfg
    name = [str(_claim_new_folder(default_out_dir(cfg)))] if info.is_main else [None]
    if info.distributed:
        dist.broadcast_object_list(name, src=0)
    if info.is_main:
        log.info("out_dir not set: writing this run into %s", name[0])
    return dataclasses.replace(cfg, out_dir=name[0])


def run_files(folder: Path) -> list[str]:
    """The files of a run present in ``folder`` (an empty ``metrics.jsonl``, a lone ``config.yaml``,
    ``run.json`` and ``environment.json``, what a run stopped before its first epoch leaves, do not count)."""
    found = [n for n in RUN_FILES if (folder / n).is_file()]
    if "metrics.jsonl" in found and (folder / "metrics.jsonl").stat().st_size == 0:
        found.remove("metrics.jsonl")
    return [] if set(found) <= _SETUP_FILES else found


def _delete_run(folder: Path, names: list[str]) -> None:
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
    log.warning("overwrite=true: deleted the previous run in %s (%s)", folder, ", ".join(names))


def check_reuse(cfg: Config, folder: Path) -> None:
    """Enforce the resume/overwrite policy for a folder that may hold a run (see the module doc)."""
    found = run_files(folder)
    if not found:
        return
    if cfg.overwrite:
        _delete_run(folder, found)
        return
    resumable = any((folder / n).is_file() for n in ("last.pt", "last.prev.pt"))
    if cfg.resume == "no" or (cfg.resume == "auto" and not resumable):
        why = "" if cfg.resume == "no" else " but no checkpoint to continue from (no last.pt, last.prev.pt)"
        continue_hint = "continue it with resume=auto, " if resumable else ""
        raise ValueError(
            f"out_dir {folder} already holds a run ({', '.join(found)}){why}; {continue_hint}start over with "
            "overwrite=true (deletes that run's checkpoints and logs), or choose another out_dir "
            "(leave out_dir unset for a fresh folder per run)"
        )


def _sweep(folder: Path) -> None:
    # Called holding the lock, before this process writes into the folder: its own pid counts as dead.
    for stale in stale_temp_files(folder, own=True):
        try:
            stale.unlink()
        except OSError:
            pass


def _lock(folder: Path) -> FolderLock:
    lock = FolderLock(folder, LOCK_NAME, "unikd train",
                      fix="Wait for it to finish, stop it, or train into another out_dir.")
    try:
        return lock.acquire()
    except OSError as exc:  # os.write() of the lock file (disk full) names no file: name it
        raise (with_path(exc, lock.path) if exc.filename is None else exc) from exc


@contextlib.contextmanager
def claim_run_folder(cfg: Config, info: DistInfo) -> Iterator[None]:
    """Rank 0: lock ``cfg.out_dir``, sweep dead writers' temp files, apply :func:`check_reuse`; release on
    exit. ``OSError``s about files in the folder leave as
    :class:`~unikd.engine.run.write_errors.RunWriteError`.
    """
    folder = Path(cfg.out_dir)
    lock = None
    try:
        if info.is_main:
            lock = _lock(folder)
            _sweep(folder)
            check_reuse(cfg, folder)
        yield
    except OSError as exc:
        if inside(exc.filename, folder):
            raise run_write_error(exc, folder) from exc
        raise
    finally:
        if lock is not None:
            lock.release()
