"""Read run folders (``config.yaml``, ``metrics.jsonl``, ``summary.json``) into result rows and write
``results.csv``.

A run folder written by ``unikd bench`` also holds ``bench_run.json`` (its track, method label and seed in
the grid). Other run folders are grouped by their ``config.yaml``: the track is the student model, the label
the method (with ``@TEACHER`` appended for runs that used a teacher model).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unikd._atomic import atomic_write_text
from unikd._files import require_regular_file
from unikd.bench.metrics_lines import read_metrics_file

BENCH_RECORD = "bench_run.json"
RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml")
CSV_COLUMNS = [
    "track",
    "method",
    "loss_method",
    "seed",
    "model",
    "teacher_model",
    "finished",
    "best_top1",
    "best_epoch",
    "last_top1",
    "last_top5",
    "last_nll",
    "last_ece",
    "test_selected_top1",
    "test_selected_top5",
    "test_selected_nll",
    "test_selected_ece",
    "test_last_top1",
    "test_last_top5",
    "test_last_nll",
    "test_last_ece",
    "last_train_top1",
    "seconds_per_epoch",
    "epochs",
    "wall_seconds",
    "run_dir",
]
# Test-split metrics of runs that select their epoch on a held-out validation split (``final_test``).
TEST_KEYS = tuple(f"test_{when}_{m}" for when in ("selected", "last") for m in ("top1", "top5", "nll", "ece"))
# Top-1 on the dropped and on the kept classes of runs with data.drop_classes
# (unikd.engine.eval.class_metrics);
# their CSV columns are written only when some run dropped classes.
CLASS_KEYS = tuple(f"{when}_top1_{g}" for when in ("best", "last", "test_selected", "test_last")
                   for g in ("dropped", "kept"))
# The bias-shift fix of those runs (unikd.engine.eval.bias_shift): the constant chosen on validation and the
# selected epoch's validation and test top-1 with it (overall, dropped, kept).
BIASFIX_KEYS = ("bias_shift", "val_selected_biasfix_top1", "test_selected_biasfix_top1",
                "test_selected_biasfix_top1_dropped", "test_selected_biasfix_top1_kept")
CLASS_COLUMNS = ["dropped_classes", *CLASS_KEYS, *BIASFIX_KEYS]
# Metrics a pre-registered comparison may lead with (a spec's ``comparisons: [{metric: ...}]``).
COMPARISON_METRICS = ("best_top1", "last_top1", *TEST_KEYS, *CLASS_KEYS, *BIASFIX_KEYS[1:])


@dataclass
class RunResult:
    """One run folder's numbers. Accuracies in percent, ECE as a fraction (as in ``metrics.jsonl``)."""

    run_dir: Path
    track: str
    label: str
    method: str
    seed: int
    model: str
    teacher_model: str | None = None
    role: str = "student"
    finished: bool = False
    best_top1: float = math.nan
    best_epoch: int | None = None
    last_top1: float = math.nan
    last_top5: float = math.nan
    last_nll: float = math.nan
    last_ece: float = math.nan
    seconds_per_epoch: float = math.nan
    epochs: int = 0  # epochs completed
    wall_seconds: float = math.nan
    test_selected_top1: float = math.nan  # the test split at the epoch selected on validation
    test_selected_top5: float = math.nan
    test_selected_nll: float = math.nan
    test_selected_ece: float = math.nan
    test_last_top1: float = math.nan  # the test split at the last epoch
    test_last_top5: float = math.nan
    test_last_nll: float = math.nan
    test_last_ece: float = math.nan
    last_train_top1: float = math.nan  # running top-1 on the augmented training batches, last epoch
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/top1)
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, train/top1)
    copied_from: str | None = None  # the bench copied this run's results from an identical run
    # online training: every network's numbers (summary.json "online.networks"; the student's first)
    networks: list[dict[str, Any]] = field(default_factory=list)
    # data.drop_classes: the classes the run never trained on, and CLASS_KEYS / BIASFIX_KEYS -> value
    # (top-1 in percent; bias_shift in logit units)
    dropped_classes: list[int] = field(default_factory=list)
    class_top1: dict[str, float] = field(default_factory=dict)
    metrics_corrupt_lines: list[int] = field(default_factory=list)  # metrics.jsonl lines left out (1-based)
    metrics_torn_line: int | None = None  # the torn last line of an unfinished run (normal)

    def value(self, key: str) -> float:
        """A metric by name: a field of the run (``test_selected_top1``) or a class key
        (``test_selected_top1_dropped``); NaN when the run lacks it."""
        if key in self.class_top1 or key in CLASS_KEYS or key in BIASFIX_KEYS:
            return self.class_top1.get(key, math.nan)
        return float(getattr(self, key))

    def csv_row(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "method": self.label,
            "loss_method": self.method,
            "seed": self.seed,
            "model": self.model,
            "teacher_model": self.teacher_model or "",
            "finished": self.finished,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "last_top1": self.last_top1,
            "last_top5": self.last_top5,
            "last_nll": self.last_nll,
            "last_ece": self.last_ece,
            **{k: getattr(self, k) for k in TEST_KEYS},
            "last_train_top1": self.last_train_top1,
            "seconds_per_epoch": self.seconds_per_epoch,
            "epochs": self.epochs,
            "wall_seconds": self.wall_seconds,
            "run_dir": str(self.run_dir),
            "dropped_classes": " ".join(map(str, self.dropped_classes)),
            **{k: self.class_top1.get(k, math.nan) for k in (*CLASS_KEYS, *BIASFIX_KEYS)},
        }


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when absent or unreadable (a run killed mid-write)."""
    if path.exists():
        require_regular_file(path, "run file")  # ValueError for a FIFO: opening it would block forever
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Epoch records of ``metrics.jsonl``, one per epoch; skipped lines: :func:`read_metrics_file`."""
    return read_metrics_file(path).records


def is_finished(run_dir: str | os.PathLike[str]) -> bool:
    """True when the run's ``summary.json`` says ``finished: true``."""
    summary = read_json(Path(run_dir) / "summary.json")
    return bool(summary and summary.get("finished") is True)


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def load_run(run_dir: str | os.PathLike[str]) -> RunResult | None:
    """The result of one run folder, or None when it has not finished an epoch yet."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json") or {}
    lines = read_metrics_file(run_dir / "metrics.jsonl")
    metrics = lines.records
    if not summary and not metrics:
        return None
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            config = {}
    record = read_json(run_dir / BENCH_RECORD) or {}
    method = str(summary.get("method") or config.get("method") or record.get("method") or "?")
    model = str(summary.get("model") or config.get("model") or "?")
    teacher_model = summary.get("teacher_model") or (config.get("teacher") or {}).get("model")
    seed = summary.get("seed", config.get("seed", record.get("seed", 0)))
    role = str(record.get("role", "student"))
    track = str(record.get("track") or model)
    label = str(record.get("label") or (f"{method}@{teacher_model}" if teacher_model else method))
    res = RunResult(
        run_dir=run_dir,
        track=track,
        label=label,
        method=method,
        seed=int(seed),
        model=model,
        teacher_model=str(teacher_model) if teacher_model else None,
        role=role,
        finished=summary.get("finished") is True,
        copied_from=record.get("copied_from"),
    )
    res.metrics_corrupt_lines, res.metrics_torn_line = lines.skipped(finished=res.finished)
    res.curve = [(int(m["epoch"]), _num(m.get("val/top1"))) for m in metrics if "val/top1" in m]
    res.train_curve = [(int(m["epoch"]), _num(m["train/top1"])) for m in metrics if "train/top1" in m]
    if res.train_curve:
        res.last_train_top1 = res.train_curve[-1][1]
    if summary:
        res.best_top1 = _num(summary.get("best_top1"))
        res.best_epoch = summary.get("best_epoch")
        res.last_top1 = _num(summary.get("last_top1"))
        res.last_top5 = _num(summary.get("last_top5"))
        res.last_nll = _num(summary.get("last_nll"))
        res.last_ece = _num(summary.get("last_ece"))
        res.seconds_per_epoch = _num(summary.get("seconds_per_epoch"))
        res.wall_seconds = _num(summary.get("wall_seconds"))
        for key in TEST_KEYS:
            setattr(res, key, _num(summary.get(key)))
        res.dropped_classes = [int(c) for c in summary.get("dropped_classes") or []]
        res.class_top1 = ({k: _num(summary.get(k)) for k in (*CLASS_KEYS, *BIASFIX_KEYS)}
                          if res.dropped_classes else {})
        online = summary.get("online")
        if isinstance(online, dict) and isinstance(online.get("networks"), list):
            res.networks = [n for n in online["networks"] if isinstance(n, dict)]
    evaluated = [m for m in metrics if "val/top1" in m]
    if evaluated and not res.finished:
        # An unfinished run (killed, or in progress): its numbers so far, from metrics.jsonl.
        best = max(evaluated, key=lambda m: _num(m["val/top1"]))
        last = evaluated[-1]
        res.best_top1, res.best_epoch = _num(best["val/top1"]), int(best["epoch"])
        res.last_top1, res.last_top5 = _num(last["val/top1"]), _num(last.get("val/top5"))
        res.last_nll, res.last_ece = _num(last.get("val/nll")), _num(last.get("val/ece"))
        secs = [_num(m.get("epoch_seconds")) for m in metrics]
        secs = [s for s in secs if math.isfinite(s)]
        res.seconds_per_epoch = sum(secs) / len(secs) if secs else math.nan
    res.epochs = int(metrics[-1]["epoch"]) if metrics else int(summary.get("epochs") or 0)
    if res.finished and summary.get("epochs") is not None:
        res.epochs = int(summary["epochs"])
    return res


def _fmt_csv(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def results_csv(results: list[RunResult], relative_to: str | os.PathLike[str] | None = None) -> str:
    """CSV text, one row per student run (teachers are listed in the report, not here); ``run_dir`` is
    written relative to ``relative_to`` when given (so a copied report folder keeps working)."""
    buf = io.StringIO()
    dropped = any(r.dropped_classes for r in results if r.role == "student")
    columns = CSV_COLUMNS[:-1] + CLASS_COLUMNS + CSV_COLUMNS[-1:] if dropped else CSV_COLUMNS
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in results:
        if r.role == "student":
            row = r.csv_row()
            if relative_to is not None:
                row["run_dir"] = os.path.relpath(r.run_dir, Path(relative_to).resolve())
            writer.writerow({k: _fmt_csv(v) for k, v in row.items()})
    return buf.getvalue()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` via a temporary file in the same folder and ``os.replace`` (never a torn file)."""
    atomic_write_text(path, text)
