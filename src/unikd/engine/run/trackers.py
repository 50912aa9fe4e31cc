"""Experiment trackers fed by the run folder: ``metrics.csv`` (always) and, on request (config key
``trackers``), Weights & Biases and MLflow.

Every tracker receives the same four things: the resolved config, one record per epoch (``lr``, every
``train/<term>``, the ``val/*`` metrics, throughput), the summary (after every epoch and at the end) and the
full history when a run resumes. The history replay keeps them exact across resumes, like ``metrics.jsonl``:
``metrics.csv`` is rebuilt from it, and wandb / MLflow receive only the epochs they have not seen (their run
ids and the last epoch they were sent sit in ``trackers.json`` in the run folder, so a resumed run continues
the same wandb / MLflow run instead of starting a second one).

Destinations are the libraries' own settings: ``WANDB_PROJECT`` (default ``unikd``), ``WANDB_MODE=offline``,
``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` (default ``unikd``). The run name is the name of the
run folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unikd._atomic import atomic_write_text
from unikd._optional import import_optional
from unikd.registry import closest

TRACKERS = ("wandb", "mlflow")
STATE_FILE = "trackers.json"


def check_tracker_names(names: Sequence[str]) -> list[str]:
    """The tracker names, validated (``trackers=[wandb, mlflow]``); duplicates are an error too."""
    out = []
    for name in names:
        if name not in TRACKERS:
            hint = closest(str(name), TRACKERS)
            raise ValueError(
                f"trackers: unknown tracker {name!r}{f' (did you mean {hint!r}?)' if hint else ''}; "
                f"choose from {list(TRACKERS)} (metrics.csv, metrics.jsonl and TensorBoard need no entry)"
            )
        if name in out:
            raise ValueError(f"trackers: {name!r} is listed twice; list each tracker once")
        out.append(name)
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"name": "x"}}`` -> ``{"data.name": "x"}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class CSVLog:
    """``metrics.csv``: one row per epoch, the columns of ``metrics.jsonl`` (timm's ``summary.csv`` style).

    Rewritten whole and atomically at every epoch (a few hundred short lines at most), so a killed run never
    leaves a torn row; on resume it is rebuilt from the checkpoint's history.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def _write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows:
            # Empty cells for missing, skipped (val/* with eval_every) and non-finite values (null in JSONL).
            writer.writerow([row[k] if _finite(row.get(k)) or isinstance(row.get(k), str) else ""
                             for k in columns])
        atomic_write_text(self.path, buf.getvalue())

    def replay(self, history: list[dict[str, Any]]) -> None:
        self.rows = [dict(r) for r in history]
        self._write()

    def log_epoch(self, record: dict[str, Any]) -> None:
        self.rows.append(dict(record))
        self._write()


def _import(package: str) -> Any:
    return import_optional(
        package,
        f"trackers=[{package}] needs the {package} package, which is not installed; "
        f"pip install 'unikd[{package}]', or remove {package!r} from trackers",
    )


class WandbTracker:
    """Weights & Biases: config as the run config, each epoch record at ``step=epoch``, the summary as the
    run summary. ``WANDB_MODE=offline`` writes the run under ``<run folder>/wandb/`` without a network."""

    name = "wandb"

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        wandb = _import("wandb")
        run_id = state.get("id") or secrets.token_hex(6)  # wandb ids: lowercase letters and digits
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "unikd"),
            id=run_id,
            resume="allow",
            name=folder.resolve().name,
            dir=str(folder),
        )
        state["id"] = run_id

    def log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_epoch(self, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if k != "epoch" and _finite(v)}
        self.run.log(values, step=int(record["epoch"]))

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.run.summary.update({k: v for k, v in summary.items() if v is not None})

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


class MLflowTracker:
    """MLflow through its client API (it never touches a run the calling program has active): the config
    as params (flattened ``data.name``; at the run's creation, since MLflow params cannot change) and as a
    ``config.json`` artifact, each epoch record as metrics at ``step=epoch``, the summary as
    ``summary.json`` and, once the run finished, as ``summary/<key>`` metrics."""

    name = "mlflow"

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        mlflow = _import("mlflow")
        self._entities = mlflow.entities
        self.client = mlflow.tracking.MlflowClient()
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "unikd")
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.new = not state.get("id")
        if self.new:
            state["id"] = self.client.create_run(exp_id, run_name=folder.resolve().name).info.run_id
        else:
            self.client.update_run(state["id"], status="RUNNING")
        self.run_id = state["id"]

    def log_config(self, config: dict[str, Any]) -> None:
        if self.new:
            params = [self._entities.Param(k, json.dumps(v) if isinstance(v, list) else str(v))
                      for k, v in flatten(config).items()]
            self.client.log_batch(self.run_id, params=params)
        self.client.log_dict(self.run_id, config, "config.json")

    def _metrics(self, values: dict[str, Any], step: int) -> None:
        ms = int(time.time() * 1000)
        metrics = [self._entities.Metric(k, float(v), ms, step) for k, v in values.items() if _finite(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_epoch(self, record: dict[str, Any]) -> None:
        self._metrics({k: v for k, v in record.items() if k != "epoch"}, int(record["epoch"]))

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.client.log_dict(self.run_id, summary, "summary.json")
        if summary.get("finished"):
            self._metrics({f"summary/{k}": v for k, v in summary.items()}, int(summary.get("epochs") or 0))

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "KILLED")


_CLASSES = {"wandb": WandbTracker, "mlflow": MLflowTracker}


class Trackers:
    """``metrics.csv`` plus the requested external trackers of one run folder (rank 0 only)."""

    def __init__(self, folder: str | Path, names: Sequence[str] = ()) -> None:
        self.folder = Path(folder)
        self.csv = CSVLog(self.folder / "metrics.csv")
        self._state_path = self.folder / STATE_FILE
        self._state: dict[str, Any] = {}
        if self._state_path.is_file():
            try:
                self._state = json.loads(self._state_path.read_text())
            except (OSError, ValueError):
                self._state = {}  # unreadable: start new external runs rather than fail the training run
        self.external: list[Any] = []
        self._finished = False
        for name in check_tracker_names(names):
            self.external.append(_CLASSES[name](self.folder, self._state.setdefault(name, {})))
        self._save_state()

    def _save_state(self) -> None:
        if self.external:
            atomic_write_text(self._state_path, json.dumps(self._state, indent=2) + "\n")

    def _send(self, tracker: Any, record: dict[str, Any]) -> None:
        st = self._state[tracker.name]
        if int(record["epoch"]) > int(st.get("last_epoch", 0)):
            tracker.log_epoch(record)
            st["last_epoch"] = int(record["epoch"])

    def log_config(self, config: dict[str, Any]) -> None:
        for t in self.external:
            t.log_config(config)

    def replay(self, history: list[dict[str, Any]]) -> None:
        """Rebuild ``metrics.csv`` from ``history``; send the epochs the external trackers have not seen."""
        self.csv.replay(history)
        for t in self.external:
            for record in history:
                self._send(t, record)
        self._save_state()

    def log_epoch(self, record: dict[str, Any]) -> None:
        self.csv.log_epoch(record)
        for t in self.external:
            self._send(t, record)
        self._save_state()

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._finished = bool(summary.get("finished"))
        for t in self.external:
            t.log_summary(summary)

    def close(self) -> None:
        for t in self.external:
            t.close(self._finished)
        self.external = []


__all__ = [
    "TRACKERS",
    "CSVLog",
    "MLflowTracker",
    "Trackers",
    "WandbTracker",
    "check_tracker_names",
    "flatten",
]
