"""The run folder: ``config.yaml``, ``metrics.jsonl``, ``metrics.csv``, ``summary.json``, optional TensorBoard
events and the optional wandb / MLflow trackers (:mod:`unikd.engine.run.trackers`).

Only rank 0 writes (``enabled=False`` on other ranks turns every method into a no-op). JSON files are
written atomically; ``metrics.jsonl`` is rebuilt from the checkpoint's history on resume, so a run killed
between writing a checkpoint and appending its metrics line never ends up with a missing or repeated line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unikd._atomic import atomic_write_text, with_path
from unikd.engine.config import Config, save_config
from unikd.engine.run.environment import record_environment
from unikd.engine.run.identity import write_run_file
from unikd.engine.run.trackers import Trackers


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf; write null so every line parses with strict readers.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunDir:
    """Writes the run folder's files (rank 0 only)."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool | str = "auto",
        trackers: Sequence[str] = (),
    ) -> None:
        self.path = Path(out_dir)
        self.enabled = enabled
        self._tb: Any = None
        self._trackers: Trackers | None = None
        if not enabled:
            return
        # Temp files of killed writers are swept by unikd.engine.loop.claim, which holds the folder's lock.
        self.path.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            self._tb = self._open_tensorboard(required=tensorboard is True)
        self._trackers = Trackers(self.path, trackers)

    def _open_tensorboard(self, *, required: bool) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            if required:
                raise ImportError(
                    f"tensorboard=true but TensorBoard is not installed ({exc}); "
                    "pip install 'unikd[tb]' or set tensorboard=auto"
                ) from exc
            return None
        return SummaryWriter(log_dir=str(self.path / "tb"))

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def safetensors(self) -> Path:
        return self.path / "student.safetensors"

    def write_config(
        self, cfg: Config, run_id: str | None = None, resumed_from: dict[str, Any] | None = None
    ) -> None:
        """``config.yaml``, this start's ``environment.json`` entry and, with ``run_id``, ``run.json`` (the
        run's identity)."""
        if self.enabled:
            if run_id is not None:
                write_run_file(self.path, run_id, resumed_from)
            record_environment(self.path)
            save_config(cfg, self.path / "config.yaml")
            self._trackers.log_config(cfg.to_dict())

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One JSON line per epoch; also mirrored to TensorBoard when it is on."""
        if not self.enabled:
            return
        line = json.dumps({k: _jsonable(v) for k, v in record.items()})
        path = self.path / "metrics.jsonl"
        try:
            with open(path, "a") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # name the file: a failed write() (disk full) carries no filename
            raise with_path(exc, path) from exc
        if self._tb is not None:
            step = int(record["epoch"])
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        self._trackers.log_epoch(record)

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``history`` (used on resume)."""
        if self.enabled:
            text = "".join(json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n" for r in history)
            atomic_write_text(self.path / "metrics.jsonl", text)
            self._trackers.replay(history)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            text = json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2) + "\n"
            atomic_write_text(self.path / "summary.json", text)
            self._trackers.log_summary(summary)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._trackers is not None:
            self._trackers.close()
