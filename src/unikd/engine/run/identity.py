"""A run's identity: a random run id, made when a run first starts, kept in ``run.json`` in its folder and
in every checkpoint it writes (``run_id``).

The id tells a run's own checkpoint from another run's copied into its folder: the configs of two runs can
match exactly (a repeated run, another seed folder with the same seed), so only the id can tell them apart.
Checkpoints and folders from before run ids existed have none; an unknown id never refuses anything (the
config check of :mod:`unikd.engine.loop.resume_check` still applies).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from unikd._atomic import atomic_write_text
from unikd._files import require_regular_file

RUN_FILE = "run.json"


def new_run_id() -> str:
    # uuid4 draws from os.urandom, not from the torch/numpy/Python RNGs that exact resume restores.
    return uuid.uuid4().hex[:16]


def read_run_id(folder: str | Path) -> str | None:
    """The run id recorded in ``folder/run.json``; None when absent or unreadable (an older run folder)."""
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return None
    require_regular_file(path, "run file")  # a FIFO would block the read forever
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def write_run_file(folder: str | Path, run_id: str, resumed_from: dict[str, Any] | None = None) -> None:
    """Record ``run_id`` in ``folder/run.json`` (kept as is when it already names this id)."""
    if read_run_id(folder) == run_id:
        return
    record: dict[str, Any] = {"run_id": run_id, "created": time.time()}
    if resumed_from:
        record["resumed_from"] = resumed_from  # the checkpoint of another run this one was started from
    atomic_write_text(Path(folder) / RUN_FILE, json.dumps(record, indent=1) + "\n")


def check_own_folder(path: str | Path, run_id: object, what: str) -> None:
    """Refuse a file that unikd wrote for one run (``run_id``: the id it carries) found in the folder of
    another (whose ``run.json`` names a different id): a copied ``best.pt`` or ``student.safetensors``
    would otherwise be evaluated or distilled from as if it were that folder's run. Files without an id
    (foreign, or from before run ids) and folders without ``run.json`` are not checked."""
    path = Path(path)
    folder_id = read_run_id(path.parent)
    if isinstance(run_id, str) and run_id and folder_id and run_id != folder_id:
        raise ValueError(
            f"{what} {str(path)!r} was written by another run (run id {run_id}) than the run of its folder "
            f"(run id {folder_id} in {path.parent / RUN_FILE}); it is not that run's file. Use the file from "
            "its own run folder, or copy the whole folder (run.json included) rather than one file"
        )
